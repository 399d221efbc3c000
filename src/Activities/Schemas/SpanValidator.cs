using System.Text.Json;

namespace Pipelines.Activities.Schemas;

/// <summary>
/// The paper's validity rules for a schema application (research §8, <c>validate_spans</c>): every span present and
/// in schema order, contiguous, every token assigned once and none invented, no empty span unless allowed, and the
/// final token alone in the last span.
/// </summary>
public static class SpanValidator
{
    /// <summary>The message of the one error an example may keep when empty spans are tolerated.</summary>
    public const string EmptySpans = "empty spans";

    /// <summary>Errors of <paramref name="app"/>; <paramref name="first"/> is the first real position (1 after BOS).</summary>
    public static List<string> Check(DatasetSchema schema, SpanApplication app, int first, bool allowEmpty)
    {
        var errors = new List<string>();
        if (app.Starts.Length != schema.Count)
        {
            errors.Add($"expected {schema.Count} spans, got {app.Starts.Length}");
            return errors;
        }
        if (app.Starts[0] != first)
        {
            errors.Add($"the first span \"{schema.Spans[0].Title}\" must start at the first token (position {first}), not {app.Starts[0]}");
        }
        for (var s = 0; s + 1 < app.Starts.Length; s++)
        {
            if (app.Starts[s] > app.Starts[s + 1])
            {
                errors.Add($"span \"{schema.Spans[s + 1].Title}\" starts before span \"{schema.Spans[s].Title}\": spans must be in schema order");
            }
        }
        if (app.Starts[^1] >= app.Length || app.SpanLength(schema.Count - 1) != 1)
        {
            errors.Add($"the final span \"{schema.Spans[^1].Title}\" must hold exactly the last token; it holds {Math.Max(0, app.Length - app.Starts[^1])}");
        }
        var empty = Enumerable.Range(0, schema.Count - 1).Where(s => app.SpanLength(s) == 0).Select(s => schema.Spans[s].Title).ToList();
        if (empty.Count > 0 && !allowEmpty)
        {
            errors.Add($"{EmptySpans}: {string.Join(", ", empty)}");
        }
        return errors;
    }

    /// <summary>
    /// An LLM's application <c>{"Span Title": ["tok", ...], ...}</c> of <paramref name="schema"/> to an example whose
    /// tokens (as strings, without BOS) are <paramref name="tokens"/>. Only the list lengths place the boundaries, as in
    /// the paper's code, but the lists must also spell the example's tokens in order (whitespace ignored).
    /// </summary>
    public static (SpanApplication? App, List<string> Errors) FromTokenLists(DatasetSchema schema, string answer, IReadOnlyList<string> tokens, int first, bool allowEmpty)
    {
        var pairs = DatasetSchema.ReadObject(answer);
        if (pairs is null)
        {
            return (null, ["the answer is not a JSON object of span titles to token lists"]);
        }
        var titles = pairs.Select(p => p.Key).ToList();
        var expected = schema.Spans.Select(s => s.Title).ToList();
        var errors = new List<string>();
        var missing = expected.Except(titles).ToList();
        var extra = titles.Except(expected).ToList();
        if (missing.Count > 0)
        {
            errors.Add($"missing spans: {string.Join(", ", missing)}");
        }
        if (extra.Count > 0)
        {
            errors.Add($"spans not in the schema: {string.Join(", ", extra)}");
        }
        if (titles.Count != titles.Distinct().Count())
        {
            errors.Add("a span appears twice");
        }
        if (errors.Count == 0 && !titles.SequenceEqual(expected))
        {
            errors.Add("spans are not in the schema's order");
        }
        if (errors.Count > 0)
        {
            return (null, errors);
        }
        var starts = new int[schema.Count];
        var position = 0;
        for (var s = 0; s < schema.Count; s++)
        {
            starts[s] = first + position;
            var value = pairs[s].Value;
            if (value.ValueKind != JsonValueKind.Array || value.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
            {
                errors.Add($"span \"{schema.Spans[s].Title}\": expected a list of token strings");
                continue;
            }
            foreach (var token in value.EnumerateArray().Select(e => e.GetString()!))
            {
                if (position >= tokens.Count)
                {
                    errors.Add($"span \"{schema.Spans[s].Title}\": token \"{token}\" is beyond the example's {tokens.Count} tokens (invented or duplicated)");
                    break;
                }
                if (!string.Equals(token.Trim(), tokens[position].Trim(), StringComparison.Ordinal))
                {
                    errors.Add($"span \"{schema.Spans[s].Title}\": token \"{token}\" is not the example's next token \"{tokens[position]}\" (tokens must be contiguous, in order, each once)");
                    return (null, errors);
                }
                position++;
            }
        }
        if (errors.Count == 0 && position != tokens.Count)
        {
            errors.Add($"the spans cover {position} of the example's {tokens.Count} tokens; every token must be assigned");
        }
        if (errors.Count > 0)
        {
            return (null, errors);
        }
        var app = new SpanApplication(starts, first + tokens.Count);
        errors.AddRange(Check(schema, app, first, allowEmpty));
        return (app, errors);
    }
}
