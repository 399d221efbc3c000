
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
