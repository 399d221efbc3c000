using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Data;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;

namespace Pipelines.Activities.Causal;

/// <summary>Linear probes per layer × position on a labelled dataset, with a control task and selectivity.</summary>
[Activity("probe.train", Version = 1, Category = "Causal", Summary = "Linear probes (logistic, L2, grouped seeded split) per layer × position, with the Hewitt–Liang control task and selectivity")]
[Output("results", ArtifactKinds.ProbeResults, Help = "probes.json: accuracy, balanced accuracy, 95 % interval, control accuracy and selectivity per layer × position", MediaType = "application/json", FileName = "probes.json")]
[Output("weights", ArtifactKinds.ProbeResults, Help = "probes.safetensors: L{layer}.{position}.weight [classes, d] and .bias, in raw activation coordinates", MediaType = "application/octet-stream", FileName = "probes.safetensors")]
[Output("curves", ArtifactKinds.Plot, Help = "Accuracy by layer per position, the control task and the chance line (PNG)", MediaType = "image/png", FileName = "probe-curves.png")]
public sealed class ProbeTrainActivity : Activity<ProbeTrainActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("Labelled rows: \"text\" and \"label\"; optional \"group\" (kept within one split) and \"word\" (the control task's word type)", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("Hook family read: resid-pre, resid-post, attn-out or mlp-out")]
        public PatchHook Hook { get; init; } = PatchHook.ResidPost;

        [Input("Layers (empty: every layer)")]
        public IReadOnlyList<int> Layers { get; init; } = [];

        [Input("Token positions: p ≥ 0 from the start (BOS is 0), p < 0 from the end (−1 = last token)")]
        public IReadOnlyList<int> Positions { get; init; } = [-1];

        [Input("L2 strengths tried; the best on validation is used")]
        public IReadOnlyList<double> Lambdas { get; init; } = [1e-4, 1e-2, 1];

        [Input("Adam steps per probe", Minimum = 10, Maximum = 10000)]
        public int Steps { get; init; } = 300;

        [Input("Seed of the split, the control labels and the probes' initialisation")]
        public long Seed { get; init; }

        [Input("Use at most this many rows (0: all)", Minimum = 0)]
        public int Limit { get; init; } = 2000;
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Positions).NotEmpty().WithMessage("at least one position");
            RuleFor(i => i.Lambdas).NotEmpty().WithMessage("at least one L2 strength");
            RuleForEach(i => i.Lambdas).GreaterThanOrEqualTo(0).WithMessage("L2 strengths are ≥ 0");
            RuleForEach(i => i.Layers).GreaterThanOrEqualTo(0).WithMessage("layers are 0-based block indices");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken);
        var (model, tokenizer) = lease;
        var layers = CausalInputs.Layers(input.Layers, model.Config.NLayers);
        var collector = new ActivationCollector(model, tokenizer);
        var rows = Jsonl.Read(input.Dataset.Path, "dataset", context, input.Limit).Select((row, i) =>
        {
            var text = CausalInputs.Text(row, "text", i);
            var ids = collector.Ids(text);
            var keys = input.Positions.Select(p => row["word"] is JsonValue w ? w.ToString()
                : ActivationCollector.Resolve(p, ids.Count) is { } at ? $"token {ids[at]}" : "").ToList();
            return new ProbeExample(ids, CausalInputs.Scalar(row, "label", i), row["group"] is JsonValue g ? g.ToString() : $"row {i}", keys);
        }).ToList();
        using var activations = collector.Collect(rows.Select(r => r.Ids).ToList(), input.Hook, layers, input.Positions, 32,
            (f, m) => context.Report(0.3 * f, m), context.CancellationToken);
        var labels = input.Positions.Select(ActivationCollector.Label).ToList();
        var (results, weights) = ProbeTraining.Train(activations, rows, PatchingSweep.Name(input.Hook), layers, labels, input.Lambdas, input.Seed, input.Steps,
            (f, m) => context.Report(0.3 + 0.7 * f, m), context.CancellationToken);
        results.Write(context.OutputFile("results"));
        SafetensorsFile.Write(context.OutputFile("weights"), weights, new Dictionary<string, string> { ["classes"] = string.Join(",", results.Classes), ["hook"] = results.Hook });
        foreach (var (_, t) in weights)
        {
            t.Dispose();
        }
        var series = new List<(string, IReadOnlyList<double?>)>();
        for (var p = 0; p < labels.Count; p++)
        {
            series.Add(($"probe, {labels[p]}", results.Cells.Select(r => (double?)r[p].Accuracy).ToList()));
            series.Add(($"control, {labels[p]}", results.Cells.Select(r => (double?)r[p].Control).ToList()));
        }
        GridPlot.Curves(context.OutputFile("curves"), layers.Select(l => $"L{l}").ToList(), series, $"Linear probes on {results.Hook} ({string.Join(" / ", results.Classes)})", "test accuracy", results.Chance);
        var best = results.Best;
        context.Log($"best selectivity at layer {best.Layer}, {best.Position}: accuracy {best.Accuracy:P1} [{best.Low:P0}, {best.High:P0}], control {best.Control:P1}, chance {results.Chance:P1}; {results.Train}/{results.Validation}/{results.Test} rows");
        return Task.CompletedTask;
    }
}
