using System.Text.Json.Nodes;
using Pipelines.Models.Transformer;

namespace Pipelines.Activities.Circuits;

/// <summary>The kind of a graph node.</summary>
public enum NodeKind { Input, Head, Mlp, Logits }

/// <summary>A source ("forward") node: input, a{l}.h{h} or m{l}.</summary>
public sealed record SourceNode(int Index, string Name, NodeKind Kind, int Layer, int Head);

/// <summary>A destination ("backward") slot: a head's q, k or v input, an MLP's input, or the logits.</summary>
public sealed record DestinationNode(int Index, string Name, NodeKind Kind, int Layer, int Head, char Qkv)
{
    /// <summary>The node name without the q/k/v suffix.</summary>
    public string NodeName => Kind switch { NodeKind.Head => $"a{Layer}.h{Head}", NodeKind.Mlp => $"m{Layer}", _ => "logits" };
}

/// <summary>
/// The computation graph of EAP/EAP-IG/MIB over a transformer: nodes <c>input</c>, <c>a{l}.h{h}</c>, <c>m{l}</c>,
/// <c>logits</c>; an edge u→v for every source written to the residual stream before destination v reads it,
/// triplicated into heads (&lt;q&gt;, &lt;k&gt;, &lt;v&gt;). Dense layout [n_forward, n_backward] as in research §1.4:
/// forward <c>input=0</c>, <c>a{l}.h{h}=1+l(H+1)+h</c>, <c>m{l}=1+l(H+1)+H</c>; backward
/// <c>a{l}.h{h}&lt;q|k|v&gt; = l(3H+1)+{0,1,2}H+h</c>, <c>m{l}=l(3H+1)+3H</c>, <c>logits = n_backward−1</c>.
/// GQA models are ungrouped: every query head has its own k/v input.
/// </summary>
public sealed class ComputationGraph
{
    public ComputationGraph(int layers, int heads, bool parallelAttnMlp)
    {
        Layers = layers;
        Heads = heads;
        ParallelAttnMlp = parallelAttnMlp;
        var sources = new List<SourceNode> { new(0, "input", NodeKind.Input, -1, -1) };
        var destinations = new List<DestinationNode>();
        for (var l = 0; l < layers; l++)
        {
            for (var h = 0; h < heads; h++)
            {
                sources.Add(new(sources.Count, $"a{l}.h{h}", NodeKind.Head, l, h));
            }
            sources.Add(new(sources.Count, $"m{l}", NodeKind.Mlp, l, -1));
            foreach (var qkv in "qkv")
            {
                for (var h = 0; h < heads; h++)
                {
                    destinations.Add(new(destinations.Count, $"a{l}.h{h}<{qkv}>", NodeKind.Head, l, h, qkv));
                }
            }
            destinations.Add(new(destinations.Count, $"m{l}", NodeKind.Mlp, l, -1, ' '));
        }
        destinations.Add(new(destinations.Count, "logits", NodeKind.Logits, layers, -1, ' '));
        Sources = sources;
        Destinations = destinations;
    }

    public static ComputationGraph For(TransformerConfig config) => new(config.NLayers, config.NHeads, config.ParallelAttnMlp);

    public int Layers { get; }
    public int Heads { get; }
    public bool ParallelAttnMlp { get; }
    public IReadOnlyList<SourceNode> Sources { get; }
    public IReadOnlyList<DestinationNode> Destinations { get; }
    public int NForward => Sources.Count;
    public int NBackward => Destinations.Count;

    /// <summary>Nodes: input, every head, every MLP, logits.</summary>
    public int NodeCount => NForward + 1;

    public int HeadIndex(int layer, int head) => 1 + layer * (Heads + 1) + head;
    public int MlpIndex(int layer) => 1 + layer * (Heads + 1) + Heads;
    public int HeadInputIndex(int layer, int head, char qkv) => layer * (3 * Heads + 1) + "qkv".IndexOf(qkv) * Heads + head;
    public int MlpInputIndex(int layer) => layer * (3 * Heads + 1) + 3 * Heads;
    public int LogitsIndex => NBackward - 1;

    /// <summary>How many sources (a prefix of the forward order) feed destination <paramref name="b"/>.</summary>
    public int PrevIndex(int b)
    {
        var d = Destinations[b];
        return d.Kind switch
        {
            NodeKind.Head => 1 + d.Layer * (Heads + 1),
            NodeKind.Mlp => ParallelAttnMlp ? 1 + d.Layer * (Heads + 1) : 1 + d.Layer * (Heads + 1) + Heads,
            _ => NForward,
        };
    }

    public bool IsRealEdge(int f, int b) => f < PrevIndex(b);

    /// <summary>Number of real edges.</summary>
    public long EdgeCount => Enumerable.Range(0, NBackward).Sum(b => (long)PrevIndex(b));

    /// <summary>The closed form of research §1.5 for sequential blocks (a check on the construction).</summary>
    public static long ClosedFormEdges(int l, int h) => (3L * h + 1) * (l + (h + 1L) * l * (l - 1) / 2) + (long)l * h + 1 + (long)l * (h + 1);

    public string EdgeName(int f, int b)
    {
        var d = Destinations[b];
        return $"{Sources[f].Name}->{d.Name}";
    }

    /// <summary>Every real edge as (forward index, backward index), destinations in order.</summary>
    public IEnumerable<(int F, int B)> Edges() =>
        Enumerable.Range(0, NBackward).SelectMany(b => Enumerable.Range(0, PrevIndex(b)).Select(f => (f, b)));

    /// <summary>The MIB JSON header (<c>cfg</c>).</summary>
    public JsonObject ConfigJson(int dModel) => new()
    {
        ["n_layers"] = Layers,
        ["n_heads"] = Heads,
        ["parallel_attn_mlp"] = ParallelAttnMlp,
        ["d_model"] = dModel,
    };
}
