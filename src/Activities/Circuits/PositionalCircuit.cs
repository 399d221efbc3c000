using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>Abstract node kinds of the positional graph (research §7.6).</summary>
public enum AbstractKind { PreRes, Mlp, AttnIn, AttnOut, PostRes }

/// <summary>A node of the abstract (span-level) graph.</summary>
public readonly record struct AbstractNode(AbstractKind Kind, int Layer, int Head, int Span)
{
    public string Name(IReadOnlyList<string> spans) => Kind switch
    {
        AbstractKind.PreRes => $"input@{spans[Span]}",
        AbstractKind.Mlp => $"m{Layer}@{spans[Span]}",
        AbstractKind.AttnIn => $"a{Layer}.h{Head}.in@{spans[Span]}",
        AbstractKind.AttnOut => $"a{Layer}.h{Head}@{spans[Span]}",
        _ => $"logits@{spans[Span]}",
    };
}

/// <summary>Span-aggregated scores (one statistic), as read from a Scores artifact: [S, F, X] and [S, S, L·H, 3].</summary>
public sealed record PositionalGrid(float[,,] NonCrossing, float[,,,] Crossing, IReadOnlyList<string> Spans, string Statistic);

/// <summary>
/// A positional circuit: abstract edges (upstream child → downstream parent) over spans, found by PEAP's modified
/// greedy search from the logits of the last span, with every node that has no path to an input removed.
/// </summary>
public sealed class PositionalCircuit
{
    private PositionalCircuit(ComputationGraph graph, IReadOnlyList<string> spans, HashSet<(AbstractNode Child, AbstractNode Parent)> edges)
    {
        Graph = graph;
        Spans = spans;
        Edges = edges;
    }

    public ComputationGraph Graph { get; }
    public IReadOnlyList<string> Spans { get; }
    public HashSet<(AbstractNode Child, AbstractNode Parent)> Edges { get; }

    public static PositionalCircuit Empty(ComputationGraph graph, IReadOnlyList<string> spans) => new(graph, spans, []);

    /// <summary>Every abstract edge of the graph (the full circuit).</summary>
    public static PositionalCircuit Full(ComputationGraph graph, IReadOnlyList<string> spans)
    {
        var edges = new HashSet<(AbstractNode, AbstractNode)>();
        for (var s = 0; s < spans.Count; s++)
        {
            foreach (var parent in NodesAt(graph, s))
            {
                foreach (var child in Children(graph, parent))
                {
                    edges.Add((child, parent));
                }
            }
        }
        return new PositionalCircuit(graph, spans, edges);
    }

    private static IEnumerable<AbstractNode> NodesAt(ComputationGraph g, int s)
    {
        yield return new AbstractNode(AbstractKind.PostRes, g.Layers, 0, s);
        for (var l = 0; l < g.Layers; l++)
        {
            yield return new AbstractNode(AbstractKind.Mlp, l, 0, s);
            for (var h = 0; h < g.Heads; h++)
            {
                yield return new AbstractNode(AbstractKind.AttnIn, l, h, s);
                yield return new AbstractNode(AbstractKind.AttnOut, l, h, s);
            }
        }
    }

    private static AbstractNode SourceNode(ComputationGraph g, int f, int span)
    {
        var source = g.Sources[f];
        return source.Kind switch
        {
            NodeKind.Input => new AbstractNode(AbstractKind.PreRes, 0, 0, span),
            NodeKind.Head => new AbstractNode(AbstractKind.AttnOut, source.Layer, source.Head, span),
            _ => new AbstractNode(AbstractKind.Mlp, source.Layer, 0, span),
        };
    }

    private static int SourceIndex(ComputationGraph g, AbstractNode n) => n.Kind switch
    {
        AbstractKind.PreRes => 0,
        AbstractKind.AttnOut => g.HeadIndex(n.Layer, n.Head),
        _ => g.MlpIndex(n.Layer),
    };

    /// <summary>The destinations (backward indexes) an abstract node's inputs are: q, k and v for a head.</summary>
    private static int[] DestinationIndexes(ComputationGraph g, AbstractNode n) => n.Kind switch
    {
        AbstractKind.AttnIn => [g.HeadInputIndex(n.Layer, n.Head, 'q'), g.HeadInputIndex(n.Layer, n.Head, 'k'), g.HeadInputIndex(n.Layer, n.Head, 'v')],
        AbstractKind.Mlp => [g.MlpInputIndex(n.Layer)],
        AbstractKind.PostRes => [g.LogitsIndex],
        _ => [],
    };

    /// <summary>The upstream nodes feeding <paramref name="n"/>.</summary>
    private static IEnumerable<AbstractNode> Children(ComputationGraph g, AbstractNode n)
    {
        if (n.Kind == AbstractKind.AttnOut)
        {
            for (var s = 0; s <= n.Span; s++)
            {
                yield return new AbstractNode(AbstractKind.AttnIn, n.Layer, n.Head, s);
            }
            yield break;
        }
        var destinations = DestinationIndexes(g, n);
        if (destinations.Length == 0)
        {
            yield break;
        }
        for (var f = 0; f < g.PrevIndex(destinations[0]); f++)
        {
            yield return SourceNode(g, f, n.Span);
        }
    }

    /// <summary>The abstract edge's score: non-crossing into a head or crossing take the max over q, k and v (of |·| when absolute).</summary>
    public static double EdgeScore(PositionalGrid grid, ComputationGraph g, AbstractNode child, AbstractNode parent, bool absolute)
    {
        IEnumerable<double> values = parent.Kind == AbstractKind.AttnOut
            ? Enumerable.Range(0, 3).Select(c => (double)grid.Crossing[parent.Span, child.Span, parent.Layer * g.Heads + parent.Head, c])
            : DestinationIndexes(g, parent).Select(x => (double)grid.NonCrossing[parent.Span, SourceIndex(g, child), x]);
        return values.Select(v => absolute ? Math.Abs(v) : v).Max();
    }

    /// <summary>PEAP's search (research §7.6): pop the best frontier edge <paramref name="topK"/> times, growing from the root.</summary>
    public static PositionalCircuit Search(ComputationGraph g, PositionalGrid grid, int topK, bool absolute)
    {
        var root = new AbstractNode(AbstractKind.PostRes, g.Layers, 0, grid.Spans.Count - 1);
        var nodes = new HashSet<AbstractNode> { root };
        var edges = new HashSet<(AbstractNode, AbstractNode)>();
        var heap = new PriorityQueue<(AbstractNode Child, AbstractNode Parent), double>();
        void Push(AbstractNode parent)
        {
            foreach (var child in Children(g, parent))
            {
                heap.Enqueue((child, parent), -EdgeScore(grid, g, child, parent, absolute));
            }
        }
        Push(root);
        while (edges.Count < topK && heap.TryDequeue(out var edge, out _))
        {
            if (!edges.Add(edge))
            {
                continue;
            }
            if (nodes.Add(edge.Child))
            {
                Push(edge.Child);
            }
        }
        return new PositionalCircuit(g, grid.Spans, edges).Pruned();
    }

    /// <summary>Removes every node with no path to an input (and its edges), as PEAP's search does last.</summary>
    public PositionalCircuit Pruned()
    {
        var reaches = new HashSet<AbstractNode>(Edges.Select(e => e.Child).Where(c => c.Kind == AbstractKind.PreRes));
        bool changed;
        do
        {
            changed = false;
            foreach (var (child, parent) in Edges)
            {
                if (reaches.Contains(child) && reaches.Add(parent))
                {
                    changed = true;
                }
            }
        }
        while (changed);
        return new PositionalCircuit(Graph, Spans, Edges.Where(e => reaches.Contains(e.Child) && reaches.Contains(e.Parent)).ToHashSet());
    }

    /// <summary>In-circuit flags for the run: non-crossing [S, F, X] and crossing [S_query, S_key, L·H].</summary>
    public (Tensor NonCrossing, Tensor Crossing) Masks()
    {
        var s = Spans.Count;
        var nonCrossing = new bool[s, Graph.NForward, Graph.NBackward];
        var crossing = new bool[s, s, Graph.Layers * Graph.Heads];
        foreach (var (child, parent) in Edges)
        {
            if (parent.Kind == AbstractKind.AttnOut)
            {
                crossing[parent.Span, child.Span, parent.Layer * Graph.Heads + parent.Head] = true;
                continue;
            }
            foreach (var x in DestinationIndexes(Graph, parent))
            {
                nonCrossing[parent.Span, SourceIndex(Graph, child), x] = true;
            }
        }
        return (tensor(nonCrossing), tensor(crossing));
    }

    /// <summary>The circuit's size in full-graph edges for one example with these span lengths (research §7.7).</summary>
    public long FullGraphEdges(IReadOnlyList<int> spanLengths)
    {
        long total = 0;
        foreach (var (child, parent) in Edges)
        {
            long n = spanLengths[parent.Span];
            total += parent.Kind switch
            {
                AbstractKind.AttnOut when child.Span == parent.Span => 3 * n * (n + 1) / 2,
                AbstractKind.AttnOut => 3L * spanLengths[child.Span] * n,
                AbstractKind.AttnIn => 3 * n,
                _ => n,
            };
        }
        return total;
    }

    public JsonObject ToJson(PositionalGrid? grid, bool absolute)
    {
        var edges = new JsonArray();
        foreach (var (child, parent) in Edges.OrderBy(e => e.Parent.Span).ThenBy(e => e.Parent.Layer).ThenBy(e => e.Child.Span).ThenBy(e => e.Child.Name(Spans), StringComparer.Ordinal))
        {
            var o = new JsonObject { ["from"] = child.Name(Spans), ["to"] = parent.Name(Spans) };
            if (grid is not null)
            {
                o["score"] = EdgeScore(grid, Graph, child, parent, absolute);
            }
            edges.Add(o);
        }
        return new JsonObject
        {
            ["format"] = "pipelines-positional-circuit/1",
            ["spans"] = new JsonArray(Spans.Select(s => (JsonNode)s).ToArray()),
            ["edges"] = edges,
        };
    }
}

/// <summary>
/// Runs a positional circuit (research §7.7, with the ablation it is given): at every position of span s, a
/// destination's input from a source outside the circuit at s carries the ablated value; inside a head, the query at
/// span s reads keys and values of span s′ through the ablated pattern and values unless AttnIn(s′) → AttnOut(s) is
/// in the circuit: z[t] += Σ_{t′∈s′} (A*[t,t′]v*[t′] − A[t,t′]v[t′]). BOS and padding lie in no span and are never
/// ablated. The full circuit is the clean model; the empty one, the ablated (e.g. corrupted) run.
/// </summary>
public sealed class PositionalCircuitRun(HookedTransformer model, ComputationGraph graph)
{
    private static readonly ForwardOptions Split = new() { UseAttnResult = true, SplitQkvInput = true };

    /// <summary>The ablated run's pattern and values per layer, plus its source values.</summary>
    public sealed record Ablated(Tensor Sources, IReadOnlyList<Tensor> Patterns, IReadOnlyList<Tensor> Values) : IDisposable
    {
        public void Dispose()
        {
            Sources.Dispose();
            foreach (var t in Patterns.Concat(Values))
            {
                t.Dispose();
            }
        }
    }

    public Ablated Capture(Tensor tokens, Tensor? mask)
    {
        var sources = new CircuitRun(model, graph).SourceValues(tokens, mask);
        var patterns = new Tensor[graph.Layers];
        var values = new Tensor[graph.Layers];
        using (no_grad())
        {
            var hooks = new List<(string, Func<Tensor, HookPoint, Tensor?>)>();
            for (var l = 0; l < graph.Layers; l++)
            {
                var layer = l;
                hooks.Add((HookNames.Pattern(l), (x, _) => { patterns[layer] = x.detach().clone().DetachFromDisposeScope(); return null; }));
                hooks.Add((HookNames.V(l), (x, _) => { values[layer] = Expand(x).detach().clone().DetachFromDisposeScope(); return null; }));
            }
            model.RunWithHooks(tokens, hooks, mask, Split).Dispose();
        }
        return new Ablated(sources, patterns, values);
    }

    private Tensor Expand(Tensor kv) => kv.shape[2] == graph.Heads ? kv : kv.repeat_interleave(graph.Heads / kv.shape[2], dim: 2);

    /// <summary>Logits of the circuit given by <paramref name="nonCrossing"/> [S,F,X] and <paramref name="crossing"/> [S,S,L·H] (bool).</summary>
    public Tensor Run(Tensor clean, Tensor? mask, Tensor spans, Ablated ablated, Tensor nonCrossing, Tensor crossing)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var dtype = ablated.Sources.dtype;
        var spanMask = spans.to(dtype); // [B,S,T]
        // Per-position "out of circuit" flags: out[b,t,f,x] = Σ_s spans[b,s,t]·¬in[s,f,x].
        var outOf = einsum("bst,sfx->btfx", spanMask, nonCrossing.logical_not().to(dtype));
        var tLen = clean.shape[1];
        var causal = ones(tLen, tLen, dtype: ScalarType.Bool, device: clean.device).tril().to(dtype);
        // crossOut[b,lh,t,t′] = Σ_{s,s′} spans[b,s,t]·spans[b,s′,t′]·¬cross[s,s′,lh], for t′ ≤ t.
        var crossOut = einsum("bst,sur,buv->brtv", spanMask, crossing.logical_not().to(dtype), spanMask) * causal;
        var delta = ablated.Sources.clone();
        var hooks = new List<(string, Func<Tensor, HookPoint, Tensor?>)>
        {
            ("hook_embed", (x, _) => { delta[.., .., 0] -= x; return null; }),
        };
        var patterns = new Tensor?[graph.Layers];
        var values = new Tensor?[graph.Layers];
        for (var l = 0; l < graph.Layers; l++)
        {
            var layer = l;
            var first = graph.HeadIndex(l, 0);
            hooks.Add((HookNames.Result(l), (x, _) => { delta[.., .., first..(first + graph.Heads)] -= x; return null; }));
            hooks.Add((HookNames.MlpOut(l), (x, _) => { delta[.., .., graph.MlpIndex(layer)] -= x; return null; }));
            foreach (var qkv in "qkv")
            {
                var dest = graph.HeadInputIndex(l, 0, qkv);
                var prev = graph.PrevIndex(dest);
                hooks.Add((HookNames.Input(l, qkv), (x, _) => x + einsum("btfd,btfh->bthd", delta[.., .., ..prev], outOf[.., .., ..prev, dest..(dest + graph.Heads)])));
            }
            var mlp = graph.MlpInputIndex(l);
            var mlpPrev = graph.PrevIndex(mlp);
            hooks.Add((HookNames.MlpIn(l), (x, _) => x + einsum("btfd,btf->btd", delta[.., .., ..mlpPrev], outOf[.., .., ..mlpPrev, mlp])));
            hooks.Add((HookNames.Pattern(l), (x, _) => { patterns[layer] = x; return null; }));
            hooks.Add((HookNames.V(l), (x, _) => { values[layer] = Expand(x); return null; }));
            var heads = TensorIndex.Slice(l * graph.Heads, (l + 1) * graph.Heads);
            hooks.Add((HookNames.Z(l), (z, _) =>
            {
                var w = crossOut[.., heads]; // [B,H,T,T′]
                var swap = einsum("bhtu,buhe->bthe", w * ablated.Patterns[layer], ablated.Values[layer])
                    - einsum("bhtu,buhe->bthe", w * patterns[layer]!, values[layer]!);
                return z + swap.to(z.dtype);
            }));
        }
        hooks.Add((HookNames.ResidPost(graph.Layers - 1), (x, _) => x + einsum("btfd,btf->btd", delta, outOf[.., .., .., graph.LogitsIndex])));
        return model.RunWithHooks(clean, hooks, mask, Split).MoveToOuterDisposeScope();
    }
}

/// <summary>Positional scores in a Scores artifact: <c>positional.safetensors</c> beside the aggregate scores.</summary>
public static class PositionalScoresFile
{
    public const string FileName = "positional.safetensors";

    public static void Write(string directory, PositionalScores scores, double scale)
    {
        var tensors = new List<(string, Tensor)>();
        foreach (var s in PositionalScores.Statistics)
        {
            tensors.Add(($"noncrossing.{s}", scores.NonCrossing[s].mul(Scalars.Of(scale)).to(ScalarType.Float32).cpu()));
            tensors.Add(($"crossing.{s}", scores.Crossing[s].mul(Scalars.Of(scale)).to(ScalarType.Float32).cpu()));
        }
        SafetensorsFile.Write(Path.Combine(directory, FileName), tensors);
    }

    public static bool Exists(string directory) => File.Exists(Path.Combine(directory, FileName));

    public static PositionalGrid Read(string directory, IReadOnlyList<string> spans, string statistic)
    {
        if (!PositionalScores.Statistics.Contains(statistic))
        {
            throw new Engine.Activities.ActivityException($"unknown statistic \"{statistic}\"; expected one of {string.Join(", ", PositionalScores.Statistics)}");
        }
        using var file = SafetensorsFile.Open(Path.Combine(directory, FileName));
        using var nc = file.Read($"noncrossing.{statistic}");
        using var cr = file.Read($"crossing.{statistic}");
        var a = new float[nc.shape[0], nc.shape[1], nc.shape[2]];
        Buffer.BlockCopy(nc.data<float>().ToArray(), 0, a, 0, a.Length * sizeof(float));
        var b = new float[cr.shape[0], cr.shape[1], cr.shape[2], cr.shape[3]];
        Buffer.BlockCopy(cr.data<float>().ToArray(), 0, b, 0, b.Length * sizeof(float));
        return new PositionalGrid(a, b, spans, statistic);
    }
}
