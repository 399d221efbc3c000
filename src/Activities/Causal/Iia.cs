using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Pipelines.Activities.Causal;

/// <summary>One scored example of a unit: what the drill-down shows.</summary>
public sealed record IiaExample(string Id, string Set, string Base, string Source, string Expected, string Got, bool Correct);

/// <summary>A unit's IIA per counterfactual set, with its examples.</summary>
public sealed record IiaUnit(int Layer, string Position, IReadOnlyDictionary<string, double> BySet, IReadOnlyList<IiaExample> Examples)
{
    /// <summary>MIB's acc(u): the mean over test sets of the set's average score.</summary>
    public double Accuracy => BySet.Values.Average();

    /// <summary>MIB's unit name for the residual stream.</summary>
    public string MibName => $"ResidualStream(Layer-{Layer},Token-{Position})";
}

/// <summary>
/// Interchange intervention accuracy exactly as MIB scores it (research/causal.md §2.6–2.7): greedy decoding under the
/// intervention, the task's checker (or the leaderboard's "expected in output" with one new token), the mean per set,
/// acc(u) = the mean over sets, best(l) = max over positions, Average = mean over layers of best(l), Best = max.
/// </summary>
public static class Iia
{
    public static IiaUnit Evaluate(InterchangeRunner runner, IReadOnlyList<CounterfactualRow> rows, int layer, string position, Tensor? basis, bool leaderboard,
        int batchSize = 64, CancellationToken ct = default)
    {
        var examples = new List<IiaExample>();
        using var sources = runner.SourceActivations(rows, layer, position, batchSize, ct);
        for (var start = 0; start < rows.Count; start += batchSize)
        {
            ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var chunk = rows.Skip(start).Take(batchSize).ToList();
            var chunkSources = sources[TensorIndex.Slice(start, start + chunk.Count)];
            var outputs = runner.Generate(chunk, chunkSources, layer, position, basis, leaderboard ? 1 : 0);
            examples.AddRange(chunk.Select((r, i) => new IiaExample(r.Id, r.Set, r.Base, r.Source, r.Expected, outputs[i], InterchangeRunner.Check(outputs[i], r.Expected, leaderboard))));
        }
        var bySet = examples.GroupBy(e => e.Set).OrderBy(g => g.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Average(e => e.Correct ? 1.0 : 0.0));
        return new IiaUnit(layer, position, bySet, examples);
    }

    /// <summary>best(l) per layer, their mean (Average) and max (Best), as the leaderboard aggregates.</summary>
    public static (IReadOnlyDictionary<int, double> PerLayer, double Average, double Best) Leaderboard(IReadOnlyList<IiaUnit> units)
    {
        var perLayer = units.GroupBy(u => u.Layer).OrderBy(g => g.Key).ToDictionary(g => g.Key, g => g.Max(u => u.Accuracy));
        return (perLayer, perLayer.Values.Average(), perLayer.Values.Max());
    }

    /// <summary>MIB's results JSON plus our summary: {method_name, model_name, task_name, dataset: {set: {model_unit: {u: {V: {average_score}, metadata}}}}}.</summary>
    public static JsonObject ResultsJson(IReadOnlyList<IiaUnit> units, string method, string model, string task, string variable, bool leaderboard)
    {
        var dataset = new JsonObject();
        foreach (var set in units.SelectMany(u => u.BySet.Keys).Distinct().Order(StringComparer.Ordinal))
        {
            var modelUnit = new JsonObject();
            foreach (var u in units.Where(u => u.BySet.ContainsKey(set)))
            {
                modelUnit[u.MibName] = new JsonObject
                {
                    [variable] = new JsonObject { ["average_score"] = u.BySet[set] },
                    ["metadata"] = new JsonObject { ["layer"] = u.Layer, ["position"] = u.Position },
                };
            }
            dataset[set] = new JsonObject { ["model_unit"] = modelUnit };
        }
        var (perLayer, average, best) = Leaderboard(units);
        return new JsonObject
        {
            ["method_name"] = method,
            ["model_name"] = model,
            ["task_name"] = task,
            ["dataset"] = dataset,
            ["pipelines"] = new JsonObject
            {
                ["format"] = "pipelines.iia/1",
                ["variable"] = variable,
                ["checker"] = leaderboard ? "leaderboard: expected text inside one greedy token" : "task: exact match of the greedy answer (trimmed, case-insensitive)",
                ["higher_is_better"] = true,
                ["average"] = average,
                ["best"] = best,
                ["bestPerLayer"] = new JsonObject(perLayer.Select(p => KeyValuePair.Create($"{p.Key}", (JsonNode?)p.Value))),
                ["units"] = new JsonArray(units.Select(u => (JsonNode?)new JsonObject
                {
                    ["layer"] = u.Layer, ["position"] = u.Position, ["iia"] = u.Accuracy,
                    ["bySet"] = new JsonObject(u.BySet.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value))),
                }).ToArray()),
            },
        };
    }

    /// <summary>Reads a results file's units back (for report.causal).</summary>
    public static List<(int Layer, string Position, double Iia)> ReadUnits(JsonNode doc) =>
        doc["pipelines"]?["units"]?.AsArray().Select(u => (u!["layer"]!.GetValue<int>(), u["position"]!.GetValue<string>(), u["iia"]!.GetValue<double>())).ToList()
        ?? throw new JsonException("no pipelines.units");
}
