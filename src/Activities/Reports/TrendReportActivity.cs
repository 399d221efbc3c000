using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Circuits;
using Pipelines.Activities.Data;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using Pipelines.Models.Training;
using static TorchSharp.torch;

namespace Pipelines.Activities.Reports;

/// <summary>
/// Follows a model across its checkpoints: for every complete checkpoint in a directory (in name order), the task
/// accuracy and metric, and the overlap of its top-n EAP edges with the previous checkpoint's (Jaccard). The
/// checkpoint watcher's runs end with it, so each new checkpoint redraws the trend.
/// </summary>
[Activity("report.trend", Version = 1, Category = "Reports", Summary = "Plot task metric and circuit overlap across a directory of checkpoints")]
[Output("trend", ArtifactKinds.Json, Help = "Per checkpoint: accuracy, metric, top-n edges and overlap with the previous one", MediaType = "application/json", FileName = "trend.json")]
[Output("plot", ArtifactKinds.Plot, Help = "Metric and overlap against checkpoint (PNG)", MediaType = "image/png", FileName = "trend.png")]
public sealed class TrendReportActivity : Activity<TrendReportActivity.Input>
{
    public sealed record Input
    {
        [Input("A directory of HF checkpoints (e.g. the toy trainer's step-NNNNNN folders)", IsPath = true, PathKind = PathKind.Directory)]
        public required string Checkpoints { get; init; }

        [Input("Counterfactual pairs to evaluate and attribute on", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("Checkpoint folders to include (glob)")]
        public string Pattern { get; init; } = "step-*";

        [Input("The last checkpoint to include: folders whose names sort after this one's are left out. The watcher binds the new checkpoint here, so a run's trend ends at its own checkpoint however late the run starts", IsPath = true, PathKind = PathKind.Directory)]
        public string? Until { get; init; }

        [Input("Edges in each checkpoint's circuit (top-n by |EAP score|)", Minimum = 1)]
        public int TopEdges { get; init; } = 10;

        [Input("Pairs to use (0: all)", Minimum = 0)]
        public int Limit { get; init; } = 64;
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var dirs = Directory.Exists(input.Checkpoints)
            ? Directory.GetDirectories(input.Checkpoints, input.Pattern).Order(StringComparer.Ordinal).Where(ModelArtifacts.IsComplete).ToList()
            : throw new ActivityException($"inputs.checkpoints: \"{input.Checkpoints}\" is not a directory");
        if (input.Until is { } until)
        {
            var last = Path.GetFileName(Path.TrimEndingDirectorySeparator(until));
            dirs = dirs.Where(d => string.CompareOrdinal(Path.GetFileName(d), last) <= 0).ToList();
        }
        if (dirs.Count == 0)
        {
            throw new ActivityException($"no complete checkpoint matching \"{input.Pattern}\" in {input.Checkpoints}");
        }
        var rows = Jsonl.Read(input.Dataset.Path, "dataset", context, input.Limit);
        var points = new JsonArray();
        HashSet<string>? previous = null;
        var xs = new List<double>();
        var metric = new List<double>();
        var overlap = new List<double>();
        for (var i = 0; i < dirs.Count; i++)
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var artifact = new Artifact("", ArtifactKinds.Model, "inode/directory", dirs[i], 0, true, Path.GetFileName(dirs[i]));
            var (model, tokenizer) = ModelArtifacts.Open(artifact);
            using (model)
            {
                using var batch = CounterfactualBatch.FromRows(rows, tokenizer, model.Config);
                var (clean, corrupted, mask, perExample) = batch.Slice(0, batch.Count);
                var graph = ComputationGraph.For(model.Config);
                double value, accuracy;
                using (no_grad())
                {
                    var m = perExample(model.Forward(clean, mask));
                    value = m.mean().to(ScalarType.Float64).item<double>();
                    accuracy = m.gt(Scalars.Of(0)).to(ScalarType.Float64).mean().item<double>();
                }
                var scores = new EdgeAttribution(model, graph).Eap(clean, corrupted, logits => perExample(logits).mean().neg(), mask);
                var grid = ScoresFile.ToGrid(scores, graph);
                var top = graph.Edges().OrderByDescending(e => Math.Abs(grid[e.F, e.B])).ThenBy(e => graph.EdgeName(e.F, e.B), StringComparer.Ordinal)
                    .Take(input.TopEdges).Select(e => graph.EdgeName(e.F, e.B)).ToHashSet();
                double? jaccard = previous is null ? null : (double)top.Intersect(previous).Count() / top.Union(previous).Count();
                points.Add(new JsonObject
                {
                    ["checkpoint"] = Path.GetFileName(dirs[i]),
                    ["accuracy"] = JsonNumbers.Round(accuracy),
                    ["metric"] = JsonNumbers.Round(value),
                    ["overlapWithPrevious"] = jaccard is null ? null : JsonNumbers.Round(jaccard.Value),
                    ["topEdges"] = new JsonArray(top.Order(StringComparer.Ordinal).Select(e => (JsonNode)e).ToArray()),
                });
                xs.Add(i);
                metric.Add(value);
                overlap.Add(jaccard ?? double.NaN);
                previous = top;
                context.Report((i + 1.0) / dirs.Count, $"{Path.GetFileName(dirs[i])}: accuracy {accuracy:P0}");
                context.Log($"{Path.GetFileName(dirs[i])}: accuracy {accuracy:P1}, metric {value:F3}{(jaccard is null ? "" : $", top-{input.TopEdges} overlap {jaccard:F2}")}");
            }
        }
        var doc = new JsonObject { ["metric"] = "mean task metric (logit or probability difference)", ["topEdges"] = input.TopEdges, ["checkpoints"] = points };
        File.WriteAllText(context.OutputFile("trend"), doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        var plot = new ScottPlot.Plot();
        var line = plot.Add.Scatter(xs.ToArray(), metric.ToArray());
        line.LegendText = "task metric";
        var axis = plot.Axes.AddRightAxis();
        var o = plot.Add.Scatter(xs.Where((_, k) => !double.IsNaN(overlap[k])).ToArray(), overlap.Where(v => !double.IsNaN(v)).ToArray());
        o.Axes.YAxis = axis;
        o.LegendText = $"top-{input.TopEdges} overlap with previous";
        axis.LabelText = "Jaccard overlap";
        plot.Axes.Bottom.SetTicks(xs.ToArray(), dirs.Select(Path.GetFileName).ToArray()!);
        plot.YLabel("task metric");
        plot.Title("Across checkpoints");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        plot.SavePng(context.OutputFile("plot"), 800, 420);
        return Task.CompletedTask;
    }
}
