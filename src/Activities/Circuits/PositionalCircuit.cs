using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

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
