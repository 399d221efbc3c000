using FluentValidation;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>Trains a featurizer per unit (layer × position id) on a variable's interchange interventions, the model frozen.</summary>
[Activity("causal.featurizer", Version = 1, Category = "Causal", Resources = ["gpu"], Summary = "Train featurizers per layer × position on a causal variable: identity, DAS (orthogonal W, d×k), Boundless DAS, DBM or PCA+mask")]
[Output("featurizer", ArtifactKinds.Featurizer, Help = "featurizer.json + featurizer.safetensors (W per unit, the swapped feature indices)", MediaType = "inode/directory", FileName = "featurizer", IsDirectory = true)]
public sealed class CausalFeaturizerActivity : Activity<CausalFeaturizerActivity.Input>
{
    public sealed record Input
    {
        [Input("The model (frozen)", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("Labelled counterfactuals (causal.toy-task, or MIB-style rows: base, source, expected, variable, split, positions)", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("The causal variable: rows whose \"variable\" is this (empty: every row)")]
        public string? Variable { get; init; }

        [Input("identity, das, boundless, dbm or pca")]
        public FeaturizerKind Kind { get; init; } = FeaturizerKind.Das;

        [Input("Hook family: resid-post (MIB's block output), resid-pre, attn-out or mlp-out")]
        public PatchHook Hook { get; init; } = PatchHook.ResidPost;

        [Input("Layers (empty: every layer)")]
        public IReadOnlyList<int> Layers { get; init; } = [];

        [Input("Position ids: \"last\", \"all\", or a name in the rows' positions")]
        public IReadOnlyList<string> Positions { get; init; } = ["last"];

        [Input("DAS: subspace dimension k", Minimum = 1, Maximum = 65536)]
        public int K { get; init; } = 16;

        [Input("Epochs over the train rows", Minimum = 1, Maximum = 1000)]
        public int Epochs { get; init; } = 3;

        [Input("Rows per step", Minimum = 1, Maximum = 4096)]
        public int BatchSize { get; init; } = 32;

        [Input("AdamW learning rate (MIB: 1e-2; Boundless DAS uses 1e-3 for the rotation and 1e-2 for the boundary)", Minimum = 0)]
        public double LearningRate { get; init; } = 1e-2;

        [Input("DBM and PCA: sparsity weight λ on the open gates (MIB's residual baselines: 0)", Minimum = 0)]
        public double Sparsity { get; init; }

        [Input("Keep only rows the model answers right on base and source (MIB's filter)")]
        public bool Filter { get; init; } = true;

        [Input("Seed")]
        public long Seed { get; init; }

        [Input("Use at most this many train rows (0: all)", Minimum = 0)]
        public int Limit { get; init; } = 1024;
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Positions).NotEmpty().WithMessage("at least one position id");
            RuleFor(i => i.Hook).NotEqual(PatchHook.Z).WithMessage("featurizers act on whole vectors: use resid-post, resid-pre, attn-out or mlp-out");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken);
        var (model, tokenizer) = lease;
        var layers = CausalInputs.Layers(input.Layers, model.Config.NLayers);
        var collector = new ActivationCollector(model, tokenizer);
        var runner = new InterchangeRunner(model, collector, input.Hook);
        var (rows, report) = CausalData.Load(input.Dataset, context, runner, collector, input.Variable, "train", input.Filter, input.Limit);
        context.Log($"{rows.Count} train rows ({report.Rows - report.Kept} filtered out: wrong on {report.WrongOnBase} bases, {report.WrongOnSource} sources)");
        var options = new FeaturizerOptions { Kind = input.Kind, K = input.K, Epochs = input.Epochs, BatchSize = input.BatchSize, LearningRate = input.LearningRate, Sparsity = input.Sparsity, Seed = input.Seed };
        var units = new List<FeaturizerUnit>();
        var total = layers.Count * input.Positions.Count;
        foreach (var layer in layers)
        {
            foreach (var position in input.Positions)
            {
                var unit = FeaturizerTraining.Train(runner, rows, layer, position, model.Config.DModel, options, context.Log, context.CancellationToken);
                units.Add(unit);
                context.Report((double)units.Count / total, $"L{layer}.{position}: k = {unit.Indices?.Count ?? unit.K}{(unit.OrthogonalityError is { } e ? $", orthogonality error {e:E1}" : "")}");
            }
        }
        using var featurizer = new Featurizer { Kind = input.Kind, Hook = PatchingSweep.Name(input.Hook), D = model.Config.DModel, Variable = input.Variable, Units = units };
        featurizer.Write(context.OutputDirectory("featurizer"));
        return Task.CompletedTask;
    }
}
