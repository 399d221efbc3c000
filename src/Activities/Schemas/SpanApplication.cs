using System.Text.Json;
using System.Text.Json.Nodes;

namespace Pipelines.Activities.Schemas;

/// <summary>
/// A schema applied to one example: the first position of every span in the model's token sequence (BOS, when the
/// model prepends one, is position 0 and in no span), and the sequence length including BOS. Span t covers
/// [Starts[t], Starts[t+1]); the last ends at <see cref="Length"/>; an empty span has the next span's start. This is
/// PEAP's CSV layout (research §6.3).
/// </summary>
public sealed record SpanApplication(int[] Starts, int Length)
{
    public int End(int span) => span + 1 < Starts.Length ? Starts[span + 1] : Length;

    public int SpanLength(int span) => End(span) - Starts[span];

    /// <summary>The span each position belongs to (−1 for positions before the first span, i.e. BOS).</summary>
    public int SpanOf(int position)
    {
        for (var s = Starts.Length - 1; s >= 0; s--)
        {
            if (position >= Starts[s] && position < End(s))
            {
                return s;
            }
        }
        return -1;
    }

    /// <summary>Writes <c>spans</c> ({column: start}) and <c>length</c> into a dataset row.</summary>
    public void WriteTo(JsonObject row, DatasetSchema schema)
    {
        var spans = new JsonObject();
        for (var s = 0; s < Starts.Length; s++)
        {
            spans[schema.Spans[s].Column] = Starts[s];
        }
        row["spans"] = spans;
        row["length"] = Length;
    }

    /// <summary>Reads a row's <c>spans</c> and <c>length</c>; null when the row has none.</summary>
    public static SpanApplication? ReadFrom(JsonObject row, string where)
    {
        if (row["spans"] is not JsonObject spans)
        {
            return null;
        }
        var starts = spans.Select(p => p.Value is JsonValue v && v.TryGetValue<int>(out var i) ? i
            : throw new Engine.Activities.ActivityException($"{where}: spans.{p.Key} must be an integer start position")).ToArray();
        var length = row["length"] is JsonValue l && l.TryGetValue<int>(out var n) ? n
            : throw new Engine.Activities.ActivityException($"{where}: expected an integer \"length\" beside \"spans\"");
        return new SpanApplication(starts, length);
    }

    /// <summary>The span titles of a row, in order.</summary>
    public static IReadOnlyList<string> Titles(JsonObject row) => row["spans"] is JsonObject spans ? spans.Select(p => p.Key).ToList() : [];

    public override string ToString() => JsonSerializer.Serialize(new { starts = Starts, length = Length });
}
