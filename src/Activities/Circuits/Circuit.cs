using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>
/// A set of edges of a <see cref="ComputationGraph"/> ([n_forward, n_backward] membership), with MIB's selection rules
/// (research §3): top-n by signed or absolute score, greedy growth from the logits, and pruning to a fixpoint on both
/// nodes and edges (a node stays only with an incoming and an outgoing edge; input always has "incoming").
/// </summary>
public sealed class Circuit
{
    public Circuit(ComputationGraph graph)
    {
        Graph = graph;
        Edges = new bool[graph.NForward, graph.NBackward];
    }

    public ComputationGraph Graph { get; }
    public bool[,] Edges { get; }

    public long EdgeCount
    {
        get
        {
            long n = 0;
            foreach (var e in Edges)
            {
                n += e ? 1 : 0;
            }
            return n;
        }
    }

    /// <summary>Every real edge: the full model.</summary>
    public static Circuit Full(ComputationGraph graph)
    {
        var c = new Circuit(graph);
        foreach (var (f, b) in graph.Edges())
        {
            c.Edges[f, b] = true;
        }
        return c;
    }

    /// <summary>The n best real edges by score (|score| when <paramref name="absolute"/>), then pruned.</summary>
    public static Circuit TopN(ComputationGraph graph, float[,] scores, long n, bool absolute)
    {
        var c = new Circuit(graph);
        foreach (var (f, b) in graph.Edges().OrderByDescending(e => Key(scores[e.F, e.B], absolute)).ThenBy(e => e.B).ThenBy(e => e.F).Take((int)Math.Min(n, int.MaxValue)))
        {
            c.Edges[f, b] = true;
        }
        c.Prune();
        return c;
    }

    /// <summary>
    /// Greedy (Hanna et al. 2024): start from the logits; repeatedly add the best edge whose child is already in the
    /// circuit; a new parent brings its own incoming edges into the candidates. Then prune.
    /// </summary>
    public static Circuit Greedy(ComputationGraph graph, float[,] scores, long n, bool absolute)
    {
        var c = new Circuit(graph);
        var candidates = new PriorityQueue<(int F, int B), (float, int, int)>();
        void PushInto(int b)
        {
            for (var f = 0; f < graph.PrevIndex(b); f++)
            {
                candidates.Enqueue((f, b), (-Key(scores[f, b], absolute), b, f));
            }
        }
        PushInto(graph.LogitsIndex);
        var added = new HashSet<int>();
        for (long i = 0; i < n && candidates.Count > 0; i++)
        {
            var (f, b) = candidates.Dequeue();
            c.Edges[f, b] = true;
            if (f != 0 && added.Add(f))
            {
                foreach (var slot in c.DestinationsOf(f))
                {
                    PushInto(slot);
                }
            }
        }
        c.Prune();
        return c;
    }

    /// <summary>Removes nodes without an incoming or an outgoing edge, and their edges, until nothing changes.</summary>
    public void Prune()
    {
        bool changed;
        do
        {
            changed = false;
            var alive = AliveSources();
            for (var b = 0; b < Graph.NBackward; b++)
            {
                var childAlive = ChildAlive(b, alive);
                for (var f = 0; f < Graph.PrevIndex(b); f++)
                {
                    if (Edges[f, b] && (!alive[f] || !childAlive))
                    {
                        Edges[f, b] = false;
                        changed = true;
                    }
                }
            }
        }
        while (changed);
    }

    /// <summary>Sources with an outgoing edge and (input excepted) an incoming edge.</summary>
    public bool[] AliveSources()
    {
        var alive = new bool[Graph.NForward];
        for (var f = 0; f < Graph.NForward; f++)
        {
            var outgoing = false;
            for (var b = 0; b < Graph.NBackward && !outgoing; b++)
            {
                outgoing = Edges[f, b];
            }
            alive[f] = outgoing && (f == 0 || DestinationsOf(f).Any(HasIncoming));
        }
        return alive;
    }

    private bool ChildAlive(int b, bool[] alive)
    {
        var d = Graph.Destinations[b];
        return d.Kind switch
        {
            NodeKind.Logits => true,
            NodeKind.Head => alive[Graph.HeadIndex(d.Layer, d.Head)],
            _ => alive[Graph.MlpIndex(d.Layer)],
        };
    }

    private bool HasIncoming(int b)
    {
        for (var f = 0; f < Graph.PrevIndex(b); f++)
        {
            if (Edges[f, b])
            {
                return true;
            }
        }
        return false;
    }

    /// <summary>The destination slots of a source node: a head's q, k and v inputs, or an MLP's input.</summary>
    public IEnumerable<int> DestinationsOf(int f)
    {
        var s = Graph.Sources[f];
        return s.Kind switch
        {
            NodeKind.Head => "qkv".Select(q => Graph.HeadInputIndex(s.Layer, s.Head, q)),
            NodeKind.Mlp => [Graph.MlpInputIndex(s.Layer)],
            _ => [],
        };
    }

    /// <summary>Membership as a bool tensor for <see cref="CircuitRun"/>.</summary>
    public Tensor ToTensor()
    {
        var flat = new bool[Graph.NForward * Graph.NBackward];
        Buffer.BlockCopy(Edges, 0, flat, 0, flat.Length);
        return tensor(flat).view(Graph.NForward, Graph.NBackward);
    }

    private static float Key(float score, bool absolute) => float.IsNaN(score) ? float.NegativeInfinity : absolute ? Math.Abs(score) : score;
}
