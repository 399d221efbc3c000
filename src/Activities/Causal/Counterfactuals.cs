using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>
/// One labelled counterfactual row, tokenized (research/causal.md §2.3, our JSONL form): a base prompt, a source
/// prompt, the output the causal model expects when the variable is interchanged from source into base, and named
/// position pairs (source position → base position, one list per position id; e.g. a swap of two state tokens).
/// </summary>
public sealed record CounterfactualRow(string Id, string Split, string Set, string Variable, string Base, string Source, string Expected,
    string? BaseAnswer, string? SourceAnswer, IReadOnlyList<int> BaseIds, IReadOnlyList<int> SourceIds, IReadOnlyList<int> ExpectedIds,
    IReadOnlyDictionary<string, (int[] Base, int[] Source)> Positions);

/// <summary>
/// Reads LabeledCounterfactuals rows: <c>{id, split, set, variable, base, source, expected, base_answer?, source_answer?,
/// positions: {name: {base: [p…], source: [p…]}}}</c>. A position is a token index (BOS is 0; negative counts from
/// the end) or <c>{"char": k}</c>, the last token of the prompt's first k characters, which is how generators name a
/// word's position without knowing the tokenizer. The position id <c>all</c> (every token; base and source of one
/// length) needs no entry.
/// </summary>
public static class Counterfactuals
{
    public const string All = "all";

    public static List<CounterfactualRow> Read(IReadOnlyList<JsonObject> rows, ActivationCollector collector, string? variable, int limit = 0)
    {
        var result = new List<CounterfactualRow>();
        for (var i = 0; i < rows.Count && (limit <= 0 || result.Count < limit); i++)
        {
            var row = rows[i];
            var v = row["variable"] is JsonValue vv ? vv.ToString() : "";
            if (variable is not null && v != variable)
            {
                continue;
            }
            string Text(string field) => CausalInputs.Text(row, field, i);
            string? Optional(string field) => row[field] is JsonValue x && x.ToString() is { Length: > 0 } s ? s : null;
            var (b, s, expected) = (Text("base"), Text("source"), Text("expected"));
            var baseIds = collector.Ids(b);
            var sourceIds = collector.Ids(s);
            var positions = new Dictionary<string, (int[], int[])>();
            if (row["positions"] is JsonObject map)
            {
                foreach (var (name, node) in map)
                {
                    var where = $"dataset, row {i + 1}: positions.{name}";
                    var pb = Resolve(node?["base"], b, baseIds, collector, $"{where}.base");
                    var ps = Resolve(node?["source"], s, sourceIds, collector, $"{where}.source");
                    if (pb.Length != ps.Length)
                    {
                        throw new ActivityException($"{where}: base has {pb.Length} positions and source {ps.Length}; they pair one to one");
                    }
                    positions[name] = (pb, ps);
                }
            }
            else if (row["positions"] is not null)
            {
                throw new ActivityException($"dataset, row {i + 1}: \"positions\" must be an object {{name: {{base: [...], source: [...]}}}}");
            }
            result.Add(new CounterfactualRow(Optional("id") ?? $"{i + 1}", Optional("split") ?? "test", Optional("set") ?? "default", v, b, s, expected,
                Optional("base_answer"), Optional("source_answer"), baseIds, sourceIds, collector.Continuation(expected), positions));
        }
        if (result.Count == 0)
        {
            throw new ActivityException(variable is null ? "dataset: no rows" : $"dataset: no rows for variable \"{variable}\"");
        }
        return result;
    }

    /// <summary>The (base, source) positions of a unit's position id in a row.</summary>
    public static (int[] Base, int[] Source) Of(CounterfactualRow row, string position)
    {
        if (position == All)
        {
            if (row.BaseIds.Count != row.SourceIds.Count)
            {
                throw new ActivityException($"dataset, row {row.Id}: position \"all\" needs base and source of one length ({row.BaseIds.Count} and {row.SourceIds.Count} tokens)");
            }
            var every = Enumerable.Range(0, row.BaseIds.Count).ToArray();
            return (every, every);
        }
        if (position == "last")
        {
            return row.Positions.TryGetValue("last", out var given) ? given : ([row.BaseIds.Count - 1], [row.SourceIds.Count - 1]);
        }
        return row.Positions.TryGetValue(position, out var p) ? p
            : throw new ActivityException($"dataset, row {row.Id}: no position \"{position}\" (it has {string.Join(", ", row.Positions.Keys.Append("last").Append(All))})");
    }

    private static int[] Resolve(JsonNode? node, string text, IReadOnlyList<int> ids, ActivationCollector collector, string where)
    {
        var items = node is JsonArray a ? a.ToList() : node is null ? throw new ActivityException($"{where}: missing") : [node];
        return items.Select(item =>
        {
            int index;
            if (item is JsonValue v && v.TryGetValue<int>(out var p))
            {
                index = p < 0 ? ids.Count + p : p;
            }
            else if (item is JsonObject o && o["char"] is JsonValue c && c.TryGetValue<int>(out var k) && k > 0 && k <= text.Length)
            {
                index = collector.Ids(text[..k]).Count - 1; // the last token of the prefix: the word's own last token for word-boundary tokenizers
            }
            else
            {
                throw new ActivityException($"{where}: expected a token index or {{\"char\": k}} with 0 < k ≤ {text.Length}");
            }
            return index >= 0 && index < ids.Count ? index : throw new ActivityException($"{where}: position {index} is outside the prompt's {ids.Count} tokens");
        }).ToArray();
    }
}
