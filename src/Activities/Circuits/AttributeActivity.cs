using System.Text.Json;
using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Data;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>Attribution methods.</summary>
public enum AttributionMethod { Eap, EapIgInputs, EapIgActivations, CleanCorrupted, Exact }

/// <summary>Position-aware scoring: none, spans of a schema (PEAP), or every position its own span.</summary>
public enum PositionalMode { None, Spans, Positions }

/// <summary>Scores every edge of the model's computation graph on counterfactual pairs.</summary>
[Activity("circuits.attribute", Version = 3, Category = "Circuits", Resources = ["gpu"], Summary = "Score every edge (EAP, EAP-IG-inputs, clean-corrupted, exact patching) on counterfactual pairs")]
[Output("scores", ArtifactKinds.Scores, Help = "scores.safetensors [n_forward, n_backward] + index.json", MediaType = "inode/directory", FileName = "scores", IsDirectory = true)]
[Output("graph", ArtifactKinds.Circuit, Help = "MIB JSON graph format with every edge's score", MediaType = "application/json", FileName = "graph.json")]
public sealed class AttributeActivity : Activity<AttributeActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("Counterfactual pairs: clean, corrupted, and correct/incorrect answers (or a greater-than label)", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("eap, eap-ig-inputs, eap-ig-activations, clean-corrupted or exact (every edge patched: small models)")]
        public AttributionMethod Method { get; init; } = AttributionMethod.EapIgInputs;

        [Input("What a corrupted edge carries: counterfactual, mean, mean-positional or zero (means over this dataset's clean prompts)")]
        public AblationKind Ablation { get; init; } = AblationKind.Counterfactual;

        [Input("EAP-IG interpolation steps m (α = 1/m … 1)", Minimum = 1, Maximum = 1000)]
        public int Steps { get; init; } = 5;

        [Input("Pairs per batch", Minimum = 1, Maximum = 4096)]
        public int BatchSize { get; init; } = 32;

        [Input("Use at most this many pairs (0: all)", Minimum = 0)]
        public int Limit { get; init; }

        [Input("Position-aware scores (PEAP, with eap): spans (the rows' schema application from schema.generate) or positions (one span per token; equal-length rows)")]
        public PositionalMode Positional { get; init; } = PositionalMode.None;

        [Input("Compute dtype of the model's passes: float32, or bf16 (the CPU's bf16 matrix instructions or the GPU's tensor cores; norms and softmax stay float32, scores accumulate in float32)")]
        public ComputeDtype Dtype { get; init; } = ComputeDtype.Float32;

        [Input("Memory budget for one batch, such as 4GiB or 512MiB (empty: off). The batch size becomes the largest, up to batchSize, whose estimated peak fits; the estimate and the chosen size are logged")]
        public string MaxMemory { get; init; } = "";
    }

    /// <summary>EAP-IG-inputs and clean-corrupted interpolate towards the counterfactual input.</summary>
    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Ablation).Equal(AblationKind.Counterfactual)
                .When(i => i.Method is AttributionMethod.EapIgInputs or AttributionMethod.EapIgActivations or AttributionMethod.CleanCorrupted)
                .WithMessage("eap-ig-inputs, eap-ig-activations and clean-corrupted need the counterfactual ablation; use eap or exact for mean or zero");
            RuleFor(i => i.Method).Equal(AttributionMethod.Eap).When(i => i.Positional != PositionalMode.None)
                .WithMessage("position-aware scores (PEAP) use method eap, as the paper does");
            RuleFor(i => i.Ablation).Equal(AblationKind.Counterfactual).When(i => i.Positional != PositionalMode.None)
                .WithMessage("position-aware scores (PEAP) need the counterfactual ablation");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken, input.Dtype);
        var (model, tokenizer) = lease;
        {
            using var batch = CounterfactualBatch.FromRows(Jsonl.Read(input.Dataset.Path, "dataset", context), tokenizer, model.Config, input.Limit);
            var graph = ComputationGraph.For(model.Config);
            var attribution = new EdgeAttribution(model, graph);
            if (input.Positional != PositionalMode.None)
            {
                Positional(input, context, model, graph, batch);
                return Task.CompletedTask;
            }
            var batchSize = input.BatchSize;
            long? budget;
            try
            {
                budget = AttributionMemory.Parse(input.MaxMemory);
            }
            catch (FormatException e)
            {
                throw new ActivityException($"inputs.maxMemory: {e.Message}");
            }
            if (budget is { } bytes)
            {
                var perExample = AttributionMemory.PerExample(model.Config, batch.Clean.shape[1], graph.NForward, input.Dtype == ComputeDtype.Bf16 ? 2 : 4,
                    input.Method is AttributionMethod.EapIgInputs or AttributionMethod.EapIgActivations ? input.Steps : 1);
                batchSize = AttributionMemory.BatchSize(bytes, perExample, input.BatchSize);
                context.Log($"memory budget {bytes / 1048576.0:F0} MiB, about {perExample / 1048576.0:F1} MiB per pair at {batch.Clean.shape[1]} tokens: batch size {batchSize}");
            }
            var ablation = Ablation.Prepare(input.Ablation, new CircuitRun(model, graph), batch, batchSize);
            using var total = zeros(graph.NForward, graph.NBackward);
            foreach (var (start, n) in batch.Batches(batchSize, context.CancellationToken))
            {
                using var scope = NewDisposeScope();
                var (clean, corrupted, mask, perExample) = batch.Slice(start, n);
                Tensor Loss(Tensor logits) => perExample(logits).mean().neg();
                var scores = input.Method switch
                {
                    // Counterfactual EAP takes the fused forward (1.44× the bare passes, against 5.05× for the split-input
                    // path, which other ablations still need: they hand in precomputed values).
                    AttributionMethod.Eap when input.Ablation == AblationKind.Counterfactual => attribution.Eap(clean, corrupted, Loss, mask),
                    AttributionMethod.Eap => attribution.EapAblated(clean, ablation.Values(new CircuitRun(model, graph), clean, corrupted, mask), Loss, mask),
                    AttributionMethod.EapIgInputs => attribution.EapIgInputs(clean, corrupted, Loss, input.Steps, mask),
                    AttributionMethod.EapIgActivations => attribution.EapIgActivations(clean, corrupted, Loss, input.Steps, mask),
                    AttributionMethod.CleanCorrupted => attribution.CleanCorrupted(clean, corrupted, Loss, mask),
                    _ => attribution.ExactAblated(clean, ablation.Values(new CircuitRun(model, graph), clean, corrupted, mask), Loss, mask),
                };
                total.PlusInPlace(scores.to(ScalarType.Float32).Times((double)n / batch.Count));
                context.Report((double)(start + n) / batch.Count, $"{start + n} of {batch.Count} pairs");
            }
            var info = new JsonObject
            {
                ["method"] = JsonNamingPolicy.KebabCaseLower.ConvertName(input.Method.ToString()),
                ["steps"] = input.Method is AttributionMethod.EapIgInputs or AttributionMethod.EapIgActivations ? input.Steps : null,
                ["alphas"] = input.Method is AttributionMethod.EapIgInputs or AttributionMethod.EapIgActivations ? "1/m..1 (paper)" : null,
                ["ablation"] = Ablation.Name(input.Ablation),
                ["metric"] = batch.MetricName,
                ["loss"] = "−mean metric; positive score: corrupting the edge lowers the metric",
                ["pairs"] = batch.Count,
                ["droppedUnequalLength"] = batch.Dropped,
                ["droppedIdentical"] = batch.DroppedIdentical,
            };
            var largest = total.abs().max().to(ScalarType.Float64).item<double>();
            if (!(largest > 0) || !double.IsFinite(largest))
            {
                info["warning"] = double.IsFinite(largest)
                    ? "every edge score is exactly 0: the model's metric does not change between clean and corrupted prompts"
                    : "some edge scores are not finite (NaN or infinity)";
                context.Log($"warning: {info["warning"]}");
            }
            ScoresFile.Write(context.OutputDirectory("scores"), graph, total, info, model.Config.DModel);
            var scoring = new JsonObject { ["method"] = info["method"]?.DeepClone(), ["metric"] = batch.MetricName, ["sign"] = info["loss"]?.DeepClone(), ["ablation"] = info["ablation"]?.DeepClone() };
            File.WriteAllText(context.OutputFile("graph"), ScoresFile.MibJson(graph, ScoresFile.ToGrid(total, graph), null, model.Config.DModel, scoring).ToJsonString() + "\n");
            context.Log($"{info["method"]}: {graph.EdgeCount} edges scored on {batch.Count} pairs ({batch.Dropped} dropped for unequal length, {batch.DroppedIdentical} for identical tokens)");
        }
        return Task.CompletedTask;
    }

    /// <summary>PEAP: span-aggregated non-crossing and crossing scores; the aggregate file holds their sum over spans.</summary>
    private static void Positional(Input input, ActivityContext context, Pipelines.Models.Transformer.HookedTransformer model, ComputationGraph graph, CounterfactualBatch batch)
    {
        var first = model.Config.DefaultPrependBos ? 1 : 0;
        if (input.Positional == PositionalMode.Positions)
        {
            batch.UsePositionsAsSpans(first);
        }
        else if (batch.Spans is null)
        {
            throw new ActivityException("positional: spans needs rows with \"spans\" and \"length\" (apply a schema with schema.generate), or use positional: positions");
        }
        var attribution = new PositionalAttribution(model, graph);
        PositionalScores? total = null;
        foreach (var (start, n) in batch.Batches(input.BatchSize, context.CancellationToken))
        {
            using var scope = NewDisposeScope();
            var (clean, corrupted, mask, perExample) = batch.Slice(start, n);
            var scores = attribution.Score(clean, corrupted, mask, batch.SpanSlice(start, n), logits => perExample(logits).neg());
            if (total is null)
            {
                total = scores;
                foreach (var t in total.NonCrossing.Values.Concat(total.Crossing.Values))
                {
                    t.MoveToOuterDisposeScope();
                }
            }
            else
            {
                total.Add(scores);
                scores.Dispose();
            }
            context.Report((double)(start + n) / batch.Count, $"{start + n} of {batch.Count} pairs");
        }
        using (total)
        {
            var scale = 1.0 / batch.Count;
            using var aggregate = total!.NonCrossing["sum"].sum(0L).mul(Scalars.Of(scale));
            var info = new JsonObject
            {
                ["method"] = "eap",
                ["positional"] = new JsonObject
                {
                    ["mode"] = input.Positional == PositionalMode.Spans ? "spans" : "positions",
                    ["spans"] = new JsonArray(batch.SpanTitles.Select(t => (JsonNode)t).ToArray()),
                    ["statistics"] = new JsonArray(PositionalScores.Statistics.Select(t => (JsonNode)t).ToArray()),
                    ["file"] = PositionalScoresFile.FileName,
                    ["crossingKinds"] = "q, k, v",
                },
                ["ablation"] = "counterfactual",
                ["metric"] = batch.MetricName,
                ["loss"] = "−metric; positive score: corrupting the edge lowers the metric (PEAP's code uses +metric)",
                ["pairs"] = batch.Count,
                ["droppedUnequalLength"] = batch.Dropped,
                ["droppedIdentical"] = batch.DroppedIdentical,
            };
            var directory = context.OutputDirectory("scores");
            ScoresFile.Write(directory, graph, aggregate, info, model.Config.DModel);
            PositionalScoresFile.Write(directory, total, scale);
            var scoring = new JsonObject { ["method"] = "eap", ["metric"] = batch.MetricName, ["sign"] = info["loss"]?.DeepClone(), ["ablation"] = "counterfactual", ["positional"] = info["positional"]!["mode"]?.DeepClone() };
            File.WriteAllText(context.OutputFile("graph"), ScoresFile.MibJson(graph, ScoresFile.ToGrid(aggregate, graph), null, model.Config.DModel, scoring).ToJsonString() + "\n");
            context.Log($"PEAP: {graph.EdgeCount} edges × {batch.SpanTitles.Count} spans, crossing edges in {graph.Layers * graph.Heads} heads, on {batch.Count} pairs");
        }
    }
}
