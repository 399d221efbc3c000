using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>A steering vector per layer from contrasting prompts: CAA's difference of means or ActAdd.</summary>
[Activity("steering.vector", Version = 1, Category = "Causal", Summary = "A steering vector per layer: difference of means (CAA) or ActAdd, from paired or labelled prompts")]
[Output("vector", ArtifactKinds.SteeringVector, Help = "vector.safetensors: L{layer} ([d], or [T, d] for ActAdd) with method, hook and activation norms in its metadata", MediaType = "application/octet-stream", FileName = "vector.safetensors")]
public sealed class SteeringVectorActivity : Activity<SteeringVectorActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("Rows with \"positive\" and \"negative\" prompts, or with \"text\" and \"label\" (then name the positive label)", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("mean-diff (CAA: mean(h⁺) − mean(h⁻) at one position) or actadd (whole-prompt difference of the first pair, added at the front)")]
        public SteeringMethod Method { get; init; } = SteeringMethod.MeanDiff;

        [Input("Hook family: resid-pre, resid-post, attn-out or mlp-out")]
        public PatchHook Hook { get; init; } = PatchHook.ResidPre;

        [Input("Layers (empty: every layer)")]
        public IReadOnlyList<int> Layers { get; init; } = [];

        [Input("mean-diff: the token position read (−1 = last)")]
        public int Position { get; init; } = -1;

        [Input("With text/label rows: the label of the positive set (every other label is negative)")]
        public string? Positive { get; init; }

        [Input("Use at most this many rows (0: all)", Minimum = 0)]
        public int Limit { get; init; } = 1000;
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken);
        var (model, tokenizer) = lease;
        var layers = CausalInputs.Layers(input.Layers, model.Config.NLayers);
        var rows = Jsonl.Read(input.Dataset.Path, "dataset", context, input.Limit);
        var (positives, negatives) = Sets(rows, input.Positive);
        using var vector = Steering.Build(new ActivationCollector(model, tokenizer), input.Method, input.Hook, layers, positives, negatives, input.Position, context.CancellationToken);
        vector.Write(context.OutputFile("vector"));
        context.Log($"{(input.Method == SteeringMethod.MeanDiff ? "mean-diff" : "actadd")} on {PatchingSweep.Name(input.Hook)} from {positives.Count} positive and {negatives.Count} negative prompts: " +
            string.Join(", ", layers.Select(l => $"L{l} ‖v‖/‖h‖ {vector.Vectors[l].norm().item<float>() / vector.Norms[l]:F2}")));
        return Task.CompletedTask;
    }

    private static (List<string> Positives, List<string> Negatives) Sets(List<JsonObject> rows, string? positive)
    {
        if (rows.Count == 0)
        {
            throw new ActivityException("dataset: no rows");
        }
        if (rows[0].ContainsKey("positive"))
        {
            return (rows.Select((r, i) => CausalInputs.Text(r, "positive", i)).ToList(), rows.Select((r, i) => CausalInputs.Text(r, "negative", i)).ToList());
        }
        if (positive is null)
        {
            throw new ActivityException("inputs.positive: the rows have no \"positive\"/\"negative\" prompts, so name the positive label of their \"label\" field");
        }
        var labelled = rows.Select((r, i) => (Text: CausalInputs.Text(r, "text", i), Label: CausalInputs.Scalar(r, "label", i))).ToList();
        var (pos, neg) = (labelled.Where(r => r.Label == positive).Select(r => r.Text).ToList(), labelled.Where(r => r.Label != positive).Select(r => r.Text).ToList());
        return pos.Count > 0 && neg.Count > 0 ? (pos, neg)
            : throw new ActivityException($"inputs.positive: label \"{positive}\" leaves {pos.Count} positive and {neg.Count} negative rows; both sets need rows");
    }
}
