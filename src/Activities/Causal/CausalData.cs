using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>How many rows a filter kept (research §2.3: keep a row only if the model is right on its base and its source).</summary>
public sealed record FilterReport(int Rows, int Kept, int WrongOnBase, int WrongOnSource)
{
    public JsonObject ToJson() => new() { ["rows"] = Rows, ["kept"] = Kept, ["wrongOnBase"] = WrongOnBase, ["wrongOnSource"] = WrongOnSource };
}

/// <summary>Loading counterfactual rows for the causal activities: one variable, a split, and MIB's filter.</summary>
public static class CausalData
{
    public static (List<CounterfactualRow> Rows, FilterReport Report) Load(Artifact dataset, ActivityContext context, InterchangeRunner runner, ActivationCollector collector,
        string? variable, string split, bool filter, int limit)
    {
        var all = Counterfactuals.Read(Jsonl.Read(dataset.Path, "dataset", context), collector, variable);
        var rows = all.Where(r => r.Split == split).ToList();
        if (rows.Count == 0)
        {
            var splits = string.Join(", ", all.Select(r => r.Split).Distinct().Order(StringComparer.Ordinal));
            throw new ActivityException($"dataset: no \"{split}\" rows{(variable is null ? "" : $" for variable \"{variable}\"")} (splits present: {splits})");
        }
        if (limit > 0 && rows.Count > limit)
        {
            rows = rows.Take(limit).ToList();
        }
        if (!filter)
        {
            return (rows, new FilterReport(rows.Count, rows.Count, 0, 0));
        }
        bool[] Right(Func<CounterfactualRow, string?> answer, Func<CounterfactualRow, IReadOnlyList<int>> prompt)
        {
            var checkedRows = rows.Where(r => answer(r) is not null).ToList();
            var outputs = new Dictionary<CounterfactualRow, string>();
            for (var start = 0; start < checkedRows.Count; start += 64)
            {
                var chunk = checkedRows.Skip(start).Take(64).ToList();
                var got = runner.Plain(chunk.Select(prompt).ToList(), chunk.Select(r => collector.Continuation(answer(r)!).Count).ToList());
                for (var i = 0; i < chunk.Count; i++)
                {
                    outputs[chunk[i]] = got[i];
                }
            }
            return rows.Select(r => answer(r) is not { } a || InterchangeRunner.Check(outputs[r], a, leaderboard: false)).ToArray();
        }
        var onBase = Right(r => r.BaseAnswer, r => r.BaseIds);
        var onSource = Right(r => r.SourceAnswer, r => r.SourceIds);
        var kept = rows.Where((_, i) => onBase[i] && onSource[i]).ToList();
        var report = new FilterReport(rows.Count, kept.Count, onBase.Count(b => !b), onSource.Count(b => !b));
        if (kept.Count == 0)
        {
            throw new ActivityException($"dataset: the model is wrong on every {split} row's base or source ({report.WrongOnBase} bases, {report.WrongOnSource} sources), so no row is left to intervene on; train the model further or set filter: false");
        }
        return (kept, report);
    }
}
