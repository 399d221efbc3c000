using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Common;
using static TorchSharp.torch;

namespace Pipelines.Activities.Causal;

/// <summary>The dose-response of a steering vector: its effect and its side effects on neutral text against the scale, beside a random vector of equal norm.</summary>
[Activity("steering.evaluate", Version = 1, Category = "Causal", Summary = "Steering dose-response: effect (logit difference or log P) and side effects (perplexity, KL on neutral text) against scale, with a random-vector control")]
[Output("curve", ArtifactKinds.Json, Help = "steering.json: per layer and scale, the effect, perplexity, KL and ‖c·v‖/‖h‖, for the vector and the random control", MediaType = "application/json", FileName = "steering.json")]
[Output("plot", ArtifactKinds.Plot, Help = "Dose-response: effect and perplexity against scale (PNG)", MediaType = "image/png", FileName = "dose-response.png")]
public sealed class SteeringEvaluateActivity : Activity<SteeringEvaluateActivity.Input>
{
    public sealed record Input
    {
        [Input("The model the vector was built on", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("The steering vector", Kind = ArtifactKinds.SteeringVector)]
        public required Artifact Vector { get; init; }

        [Input("Prompts with \"text\", \"target\" (the word steering should promote) and optional \"foil\" (then the metric is the logit difference)", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("Neutral text rows (\"text\") for the side effects; without it, the prompts themselves", Kind = ArtifactKinds.Dataset)]
        public Artifact? Neutral { get; init; }

        [Input("Scales c (the vector is multiplied by c)")]
        public IReadOnlyList<double> Scales { get; init; } = [-8, -4, -2, -1, 0, 1, 2, 4, 8];

        [Input("Layers to evaluate (empty: every layer of the vector)")]
        public IReadOnlyList<int> Layers { get; init; } = [];

        [Input("Seed of the random control vector")]
        public long Seed { get; init; }

        [Input("Use at most this many rows of each dataset (0: all)", Minimum = 0)]
        public int Limit { get; init; } = 256;
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken);
        var (model, tokenizer) = lease;
        using var vector = SteeringVector.Read(input.Vector.Path);
        var missing = input.Layers.Where(l => !vector.Layers.Contains(l)).ToList();
        if (missing.Count > 0)
        {
            throw new ActivityException($"inputs.layers: the vector has no layer {missing[0]}; it has {string.Join(", ", vector.Layers)}");
        }
        var layers = input.Layers.Count > 0 ? input.Layers : vector.Layers;
        var collector = new ActivationCollector(model, tokenizer);
        var rows = Jsonl.Read(input.Dataset.Path, "dataset", context, input.Limit);
        var prompts = rows.Select((r, i) => (collector.Ids(CausalInputs.Text(r, "text", i)), Word(r, "target", i), r.ContainsKey("foil") ? Word(r, "foil", i) : (int?)null)).ToList();
        var neutral = (input.Neutral is null ? rows : Jsonl.Read(input.Neutral.Path, "neutral", context, input.Limit)).Select((r, i) => collector.Ids(CausalInputs.Text(r, "text", i))).ToList();
        int Word(JsonObject r, string field, int i) => Model.VocabularyCheck.AnswerToken(tokenizer, CausalInputs.Text(r, field, i), $"dataset, row {i + 1}");
        var doc = new JsonObject { ["metric"] = prompts.All(p => p.Item3 is not null) ? "logit difference target − foil (last token)" : "log P(target) (last token)", ["hook"] = PatchingSweep.Name(vector.Hook) };
        var perLayer = new JsonObject();
        var series = new List<(string, IReadOnlyList<double?>)>();
        var perplexity = new List<(string, IReadOnlyList<double?>)>();
        for (var k = 0; k < layers.Count; k++)
        {
            var layer = layers[k];
            using var random = RandomLike(vector.Vectors[layer], input.Seed + layer);
            var steered = Steering.Evaluate(model, collector, vector, layer, input.Scales, prompts, neutral, null, context.CancellationToken);
            var control = Steering.Evaluate(model, collector, vector, layer, input.Scales, prompts, neutral, random, context.CancellationToken);
            perLayer[$"{layer}"] = new JsonObject { ["vector"] = JsonSerializer.SerializeToNode(steered, Json), ["random"] = JsonSerializer.SerializeToNode(control, Json) };
            series.Add(($"L{layer} effect", steered.Select(p => (double?)p.Effect).ToList()));
            series.Add(($"L{layer} random", control.Select(p => (double?)p.Effect).ToList()));
            perplexity.Add(($"L{layer} perplexity", steered.Select(p => (double?)p.Perplexity).ToList()));
            context.Report((k + 1.0) / layers.Count, $"layer {layer}");
            var top = steered.MaxBy(p => p.Effect)!;
            context.Log($"L{layer}: effect {steered.First(p => p.Scale == input.Scales.MinBy(Math.Abs)).Effect:F2} at c≈0 → {top.Effect:F2} at c={top.Scale} (perplexity {top.Perplexity:F1}, ‖c·v‖/‖h‖ {top.Ratio:F2})");
        }
        doc["layers"] = perLayer;
        File.WriteAllText(context.OutputFile("curve"), doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        var all = series.Concat(perplexity).SelectMany(s => s.Item2).Where(v => v is { } x && double.IsFinite(x)).Select(v => v!.Value).ToList();
        GridPlot.Curves(context.OutputFile("plot"), input.Scales.Select(s => s.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToList(), series.Concat(perplexity).ToList(),
            $"Steering dose-response on {doc["hook"]}", doc["metric"]!.GetValue<string>() + " / perplexity", null, (Math.Min(0, all.DefaultIfEmpty(0).Min()) - 0.5, all.DefaultIfEmpty(1).Max() + 0.5), "scale c");
        return Task.CompletedTask;
    }

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };

    /// <summary>A seeded Gaussian vector with the steering vector's shape and norm (ActAdd: per position).</summary>
    private static Tensor RandomLike(Tensor v, long seed)
    {
        var rng = new SeededRandom(seed);
        var values = new float[v.numel()];
        for (var i = 0; i < values.Length; i += 2)
        {
            // Box–Muller from the project's fixed PRNG, so the control is the same on every machine.
            var u1 = (rng.NextULong() >> 11) * (1.0 / (1UL << 53)) + 1e-300;
            var u2 = (rng.NextULong() >> 11) * (1.0 / (1UL << 53));
            var r = Math.Sqrt(-2 * Math.Log(u1));
            values[i] = (float)(r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < values.Length)
            {
                values[i + 1] = (float)(r * Math.Sin(2 * Math.PI * u2));
            }
        }
        var random = tensor(values).view(v.shape);
        var dim = v.dim() == 1 ? 0 : 1;
        return random.mul(v.norm(dim, keepdim: true).div(random.norm(dim, keepdim: true).clamp_min(Pipelines.Models.Runtime.Scalars.Of(1e-12))));
    }
}
