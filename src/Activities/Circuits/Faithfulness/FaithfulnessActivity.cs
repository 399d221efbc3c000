using System.Text.Json;
using FluentValidation;
using System.Text.Json.Nodes;
using Pipelines.Activities.Circuits;
using Pipelines.Activities.Data;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits.Faithfulness;

/// <summary>
/// MIB faithfulness: circuits of the top k % of edges over the grid, each run with out-of-circuit edges patched
/// from the counterfactual; f = (m(C) − m(∅)) / (m(N) − m(∅)); CPR over the signed ranking, CMD over |score|.
/// </summary>
[Activity("circuits.faithfulness", Version = 3, Category = "Circuits", Resources = ["gpu"], Summary = "Faithfulness curve, CPR and CMD (MIB) of circuits chosen from edge scores")]
[Output("metrics", ArtifactKinds.Json, Help = "m(N), m(∅), CPR, CMD, both curves and per-example metrics of the full and empty circuits", MediaType = "application/json", FileName = "faithfulness.json")]
public sealed class FaithfulnessActivity : Activity<FaithfulnessActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("Counterfactual pairs to evaluate on (use other pairs than attribution did)", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("Edge scores from circuits.attribute", Kind = ArtifactKinds.Scores)]
        public required Artifact Scores { get; init; }

        [Input("Fractions of the edges to keep (default: MIB's grid 0.001 … 1)")]
        public IReadOnlyList<double> Fractions { get; init; } = FaithfulnessCurve.MibGrid;

        [Input("top-n (MIB) or greedy (grown from the logits)")]
        public SelectionMethod Selection { get; init; } = SelectionMethod.TopN;

        [Input("What out-of-circuit edges carry: counterfactual, mean, mean-positional or zero (means over this dataset's clean prompts)")]
        public AblationKind Ablation { get; init; } = AblationKind.Counterfactual;

        [Input("Pairs per batch", Minimum = 1, Maximum = 4096)]
        public int BatchSize { get; init; } = 32;

        [Input("Use at most this many pairs (0: all)", Minimum = 0)]
        public int Limit { get; init; }

        [Input("Positional scores (PEAP): circuit sizes, in abstract edges taken by the search")]
        public IReadOnlyList<int> TopK { get; init; } = [5, 10, 20, 50, 100, 200, 500];

        [Input("Positional scores: the span statistic to rank by (sum, avg, sum_abs_pos, sum_abs_exp, max_abs)")]
        public string Statistic { get; init; } = "sum";

        [Input("Compute dtype of the model's passes: float32, or bf16 (the CPU's bf16 matrix instructions or the GPU's tensor cores; norms and softmax stay float32, scores accumulate in float32)")]
        public ComputeDtype Dtype { get; init; } = ComputeDtype.Float32;
    }

    /// <summary>Circuit sizes and the statistic are checked before anything runs.</summary>
    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Fractions).Must(f => f.Count > 0 && f.All(x => x > 0 && x <= 1))
                .WithMessage("expected a non-empty list of edge fractions, each in (0, 1]");
            RuleFor(i => i.TopK).Must(k => k.Count > 0 && k.All(x => x > 0))
                .WithMessage("expected a non-empty list of circuit sizes, each ≥ 1");
            RuleFor(i => i.Statistic).Must(s => PositionalScores.Statistics.Contains(s))
                .WithMessage(i => $"unknown statistic \"{Pipelines.Engine.Definitions.WorkflowParser.Short(i.Statistic)}\"; expected one of: {string.Join(", ", PositionalScores.Statistics)}");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken, input.Dtype);
        var (model, tokenizer) = lease;
        {
            var (graph, scores, _) = ScoresFile.Read(input.Scores.Path);
            if (graph.Layers != model.Config.NLayers || graph.Heads != model.Config.NHeads)
            {
                throw new ActivityException($"the scores are for a {graph.Layers}-layer, {graph.Heads}-head graph, but the model has {model.Config.NLayers} layers and {model.Config.NHeads} heads");
            }
            using var batch = CounterfactualBatch.FromRows(Jsonl.Read(input.Dataset.Path, "dataset", context), tokenizer, model.Config, input.Limit);
            var settings = new FaithfulnessSettings
            {
                Fractions = input.Fractions, Selection = input.Selection, Ablation = input.Ablation, BatchSize = input.BatchSize,
                TopK = input.TopK, Statistic = input.Statistic,
            };
            var result = MibFaithfulness.Evaluate(model, graph, scores, batch, settings, (f, m) => context.Report(f, m), context.CancellationToken);
            if (PositionalScoresFile.Exists(input.Scores.Path))
            {
                result["positional"] = PositionalFaithfulness.Evaluate(model, graph, batch, input.Scores.Path, settings, (f, m) => context.Report(f, m), context.Log, context.CancellationToken);
            }
            File.WriteAllText(context.OutputFile("metrics"), result.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            context.Log(result["defined"]!.GetValue<bool>()
                ? $"CPR {result["cpr"]}, CMD {result["cmd"]} (m(N) {result["mFull"]}, m(∅) {result["mEmpty"]}) on {batch.Count} pairs"
                : $"warning: faithfulness undefined: {result["undefinedReason"]}");
        }
        return Task.CompletedTask;
    }
}
