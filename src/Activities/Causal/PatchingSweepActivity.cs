using FluentValidation;
using Pipelines.Activities.Circuits;
using Pipelines.Activities.Data;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>Activation patching over layers × positions (or heads) on counterfactual pairs: a PatchingGrid and its heatmap.</summary>
[Activity("patching.sweep", Version = 1, Category = "Causal", Resources = ["gpu"], Summary = "Activation patching over layers × positions (resid_pre/post, attn_out, mlp_out, per-head z), denoising or noising")]
[Output("grid", ArtifactKinds.PatchingGrid, Help = "grid.json: metric, direction, hook, layers, positions, values [layer][position] (normalised) and raw", MediaType = "application/json", FileName = "grid.json")]
[Output("heatmap", ArtifactKinds.Plot, Help = "The normalised grid, layer × position, diverging palette centred at 0 (PNG)", MediaType = "image/png", FileName = "heatmap.png")]
public sealed class PatchingSweepActivity : Activity<PatchingSweepActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("Counterfactual pairs (the formats circuits.attribute reads): clean, corrupted, correct/incorrect or a greater-than label", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("Hook family: resid-pre, resid-post, attn-out, mlp-out, or z (per head, every position: columns are heads)")]
        public PatchHook Hook { get; init; } = PatchHook.ResidPre;

        [Input("denoise: clean activation into the corrupted run; noise: corrupted activation into the clean run")]
        public PatchDirection Direction { get; init; } = PatchDirection.Denoise;

        [Input("Columns: all (each position; prompts of one length) or spans (the rows' schema application)")]
        public PatchPositions Positions { get; init; } = PatchPositions.All;

        [Input("Layers to sweep (empty: every layer)")]
        public IReadOnlyList<int> Layers { get; init; } = [];

        [Input("Pairs per batch", Minimum = 1, Maximum = 4096)]
        public int BatchSize { get; init; } = 32;

        [Input("Use at most this many pairs (0: all)", Minimum = 0)]
        public int Limit { get; init; } = 64;

        [Input("Compute dtype of the model's passes: float32, or bf16 (the CPU's bf16 matrix instructions or the GPU's tensor cores; norms and softmax stay float32, scores accumulate in float32)")]
        public ComputeDtype Dtype { get; init; } = ComputeDtype.Float32;
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleForEach(i => i.Layers).GreaterThanOrEqualTo(0).WithMessage("layers are 0-based block indices");
            RuleFor(i => i.Layers).Must(l => l.Distinct().Count() == l.Count).WithMessage("each layer once");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken, input.Dtype);
        var (model, tokenizer) = lease;
        var layers = CausalInputs.Layers(input.Layers, model.Config.NLayers);
        using var batch = CounterfactualBatch.FromRows(Jsonl.Read(input.Dataset.Path, "dataset", context), tokenizer, model.Config, input.Limit);
        var grid = new PatchingSweep(model).Run(batch, tokenizer, input.Hook, input.Direction, input.Positions, layers, input.BatchSize,
            (f, m) => context.Report(f, m), context.CancellationToken);
        grid.Write(context.OutputFile("grid"));
        GridPlot.Heatmap(context.OutputFile("heatmap"), grid.Values, layers.Select(l => $"L{l}").ToList(), grid.Positions,
            $"{grid.Direction} {grid.Hook}: normalised {grid.Metric}", grid.Hook == "z" ? "head (all positions)" : "position", "layer", diverging: true);
        if (grid.Warning is { } warning)
        {
            context.Log($"warning: {warning}");
        }
        context.Log($"{grid.Direction} {grid.Hook}: {layers.Count} layers × {grid.Positions.Count} columns on {grid.Pairs} pairs; clean {grid.Clean:F3}, corrupted {grid.Corrupted:F3}");
        return Task.CompletedTask;
    }
}
