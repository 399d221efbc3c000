using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>Interchange intervention accuracy per (layer, position) for a featurizer trained here or given as a folder, scored as MIB does.</summary>
[Activity("causal.iia", Version = 1, Category = "Causal", Resources = ["gpu"], Summary = "Interchange intervention accuracy per layer × position for any featurizer (trained here or given as a file), MIB's checker or leaderboard mode")]
[Output("results", ArtifactKinds.IIAResults, Help = "iia.json: MIB's results layout plus the leaderboard summary (Average, Best, best per layer), the filter report and per-unit IIA", MediaType = "application/json", FileName = "iia.json")]
[Output("heatmap", ArtifactKinds.Plot, Help = "IIA per layer × position, viridis 0–1 (PNG)", MediaType = "image/png", FileName = "iia-heatmap.png")]
[Output("curve", ArtifactKinds.Plot, Help = "IIA by layer per position, with the best over positions (PNG)", MediaType = "image/png", FileName = "iia-by-layer.png")]
[Output("examples", ArtifactKinds.Json, Help = "Drill-down: base, source, expected and got for the best unit and every unit's first rows", MediaType = "application/json", FileName = "examples.json")]
public sealed class CausalIiaActivity : Activity<CausalIiaActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("Labelled counterfactuals; the test split is scored", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("A featurizer from causal.featurizer (none: the full vector at the layers and positions below)", Kind = ArtifactKinds.Featurizer)]
        public Artifact? Featurizer { get; init; }

        [Input("Or a featurizer folder on disk (featurizer.json + featurizer.safetensors): how a submission trained elsewhere is evaluated", IsPath = true, PathKind = PathKind.Directory)]
        public string? FeaturizerPath { get; init; }

        [Input("The causal variable (rows whose \"variable\" is this; empty: every row)")]
        public string? Variable { get; init; }

        [Input("Without a featurizer: the hook family of the full-vector interchange")]
        public PatchHook Hook { get; init; } = PatchHook.ResidPost;

        [Input("Layers (empty: the featurizer's, or every layer)")]
        public IReadOnlyList<int> Layers { get; init; } = [];

        [Input("Without a featurizer: position ids (\"last\", \"all\", or names in the rows' positions)")]
        public IReadOnlyList<string> Positions { get; init; } = ["last"];

        [Input("MIB leaderboard mode: one greedy token, scored by \"expected in output\" (evaluate_submission.py)")]
        public bool Leaderboard { get; init; }

        [Input("Keep only rows the model answers right on base and source")]
        public bool Filter { get; init; } = true;

        [Input("Name of the method in the results (MIB's method_name)")]
        public string Method { get; init; } = "pipelines";

        [Input("Name of the task in the results (MIB's task_name)")]
        public string Task { get; init; } = "toy";

        [Input("Use at most this many test rows (0: all)", Minimum = 0)]
        public int Limit { get; init; } = 512;
    }

    protected override System.Threading.Tasks.Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (input.Featurizer is not null && input.FeaturizerPath is not null)
        {
            throw new ActivityException("inputs.featurizerPath: give a featurizer artifact or a featurizer folder, not both");
        }
        using var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken);
        var (model, tokenizer) = lease;
        var path = input.Featurizer?.Path ?? input.FeaturizerPath;
        using var featurizer = path is null ? null : Featurizer.Read(path, input.Featurizer is null ? "inputs.featurizerPath" : "inputs.featurizer");
        if (featurizer is not null && featurizer.D != model.Config.DModel)
        {
            throw new ActivityException($"featurizer: made for width {featurizer.D}, but the model's residual stream is {model.Config.DModel} wide");
        }
        var hook = featurizer is null ? input.Hook : Enum.GetValues<PatchHook>().First(h => PatchingSweep.Name(h) == featurizer.Hook);
        var units = featurizer?.Units.Where(u => input.Layers.Count == 0 || input.Layers.Contains(u.Layer)).ToList()
            ?? CausalInputs.Layers(input.Layers, model.Config.NLayers).SelectMany(l => input.Positions.Select(p => new FeaturizerUnit(l, p, model.Config.DModel, null, null))).ToList();
        if (units.Count == 0 || units.Any(u => u.Layer >= model.Config.NLayers))
        {
            throw new ActivityException($"inputs.layers: no unit to evaluate on this model's layers 0..{model.Config.NLayers - 1}");
        }
        var collector = new ActivationCollector(model, tokenizer);
        var runner = new InterchangeRunner(model, collector, hook);
        var (rows, report) = CausalData.Load(input.Dataset, context, runner, collector, input.Variable ?? featurizer?.Variable, "test", input.Filter, input.Limit);
        var scored = new List<IiaUnit>();
        foreach (var unit in units)
        {
            using var basis = unit.Basis();
            scored.Add(Iia.Evaluate(runner, rows, unit.Layer, unit.Position, basis, input.Leaderboard, ct: context.CancellationToken));
            context.Report((double)scored.Count / units.Count, $"L{unit.Layer}.{unit.Position}: IIA {scored[^1].Accuracy:P1}");
        }
        var variable = input.Variable ?? featurizer?.Variable ?? rows[0].Variable;
        var doc = Iia.ResultsJson(scored, input.Method, model.Config.Architecture, input.Task, variable, input.Leaderboard);
        doc["pipelines"]!["featurizer"] = featurizer is null ? "identity (full vector)" : featurizer.Kind.ToString().ToLowerInvariant();
        doc["pipelines"]!["hook"] = PatchingSweep.Name(hook);
        doc["pipelines"]!["filter"] = report.ToJson();
        var top = scored.MaxBy(u => u.Accuracy)!;
        doc["pipelines"]!["examples"] = new JsonObject { ["layer"] = top.Layer, ["position"] = top.Position, ["rows"] = JsonSerializer.SerializeToNode(top.Examples.Take(12), Json) };
        File.WriteAllText(context.OutputFile("results"), doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        Plots(scored, context, $"{variable}: IIA ({doc["pipelines"]!["featurizer"]}, {PatchingSweep.Name(hook)})");
        var best = scored.MaxBy(u => u.Accuracy)!;
        var examples = new JsonObject
        {
            ["best"] = new JsonObject { ["layer"] = best.Layer, ["position"] = best.Position, ["iia"] = best.Accuracy, ["examples"] = JsonSerializer.SerializeToNode(best.Examples.Take(20), Json) },
            ["units"] = new JsonArray(scored.Select(u => (JsonNode?)new JsonObject { ["layer"] = u.Layer, ["position"] = u.Position, ["examples"] = JsonSerializer.SerializeToNode(u.Examples.Take(5), Json) }).ToArray()),
        };
        File.WriteAllText(context.OutputFile("examples"), examples.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"{variable}: Average {doc["pipelines"]!["average"]!.GetValue<double>():P1}, Best {best.Accuracy:P1} at L{best.Layer}.{best.Position}, on {rows.Count} test rows ({report.Rows - report.Kept} filtered out)");
        return System.Threading.Tasks.Task.CompletedTask;
    }

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    private static void Plots(IReadOnlyList<IiaUnit> units, ActivityContext context, string title)
    {
        var layers = units.Select(u => u.Layer).Distinct().Order().ToList();
        var positions = units.Select(u => u.Position).Distinct().ToList();
        double? At(int l, string p) => units.FirstOrDefault(u => u.Layer == l && u.Position == p)?.Accuracy;
        GridPlot.Heatmap(context.OutputFile("heatmap"), layers.Select(l => (IReadOnlyList<double?>)positions.Select(p => At(l, p)).ToList()).ToList(),
            layers.Select(l => $"L{l}").ToList(), positions, title, "position", "layer", diverging: false);
        var series = positions.Select(p => (p, (IReadOnlyList<double?>)layers.Select(l => At(l, p)).ToList())).ToList();
        if (positions.Count > 1)
        {
            series.Add(("best over positions", layers.Select(l => (double?)units.Where(u => u.Layer == l).Max(u => u.Accuracy)).ToList()));
        }
        GridPlot.Curves(context.OutputFile("curve"), layers.Select(l => $"L{l}").ToList(), series, title, "IIA");
    }
}
