using Pipelines.Models.Runtime;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Common;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Activities.Causal;

/// <summary>
/// Transplants one activation from a source prompt into a target prompt, multiplied by a factor f, at a layer and its
/// neighbours (the demographics paper's interchange on generations, research §5.2, and its downstream patch, §5.3), and
/// measures what the target then says: P(expected) at its next token and the rate of the expected word among sampled tokens.
/// </summary>
[Activity("patching.generate", Version = 1, Category = "Causal", Summary = "Transplant a source activation (× f) into target prompts at a layer window; P(expected) and the sampled rate of the expected word, per set and scale")]
[Output("results", ArtifactKinds.Json, Help = "transplant.json: per set and scale, mean P(expected), sampled success rate, and the unpatched baseline", MediaType = "application/json", FileName = "transplant.json")]
[Output("plot", ArtifactKinds.Plot, Help = "P(expected) against the factor f per set, unpatched at f = 0 (PNG)", MediaType = "image/png", FileName = "transplant.png")]
public sealed class PatchingGenerateActivity : Activity<PatchingGenerateActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("Rows: source, target, expected (one word), source_position and target_position (token index, negative from the end), optional set", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("Hook family: mlp-out (the vignettes), resid-post (the layer output, the downstream task), resid-pre or attn-out")]
        public PatchHook Hook { get; init; } = PatchHook.MlpOut;

        [Input("The centre layer L")]
        public int Layer { get; init; }

        [Input("Also patch layers L−w … L+w", Minimum = 0, Maximum = 64)]
        public int Window { get; init; }

        [Input("Factors f the source activation is multiplied by")]
        public IReadOnlyList<double> Scales { get; init; } = [1, 2, 5];

        [Input("Sampled next tokens per row and scale", Minimum = 1, Maximum = 10000)]
        public int Samples { get; init; } = 20;

        [Input("Sampling temperature", Minimum = 0.01, Maximum = 10)]
        public double Temperature { get; init; } = 0.7;

        [Input("Seed of the sampling")]
        public long Seed { get; init; }

        [Input("Compute dtype of the model's passes: float32, or bf16 (the CPU's bf16 matrix instructions or the GPU's tensor cores; norms and softmax stay float32, scores accumulate in float32)")]
        public ComputeDtype Dtype { get; init; } = ComputeDtype.Float32;
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken, input.Dtype);
        var (model, tokenizer) = lease;
        if (input.Hook == PatchHook.Z)
        {
            throw new ActivityException("inputs.hook: transplants move whole vectors; use mlp-out, resid-post, resid-pre or attn-out");
        }
        var layers = Enumerable.Range(input.Layer - input.Window, 2 * input.Window + 1).Where(l => l >= 0 && l < model.Config.NLayers).ToList();
        if (!layers.Contains(input.Layer))
        {
            throw new ActivityException($"inputs.layer: layer {input.Layer} does not exist; this model has layers 0..{model.Config.NLayers - 1}");
        }
        var collector = new ActivationCollector(model, tokenizer);
        var rows = Jsonl.Read(input.Dataset.Path, "dataset", context).Select((r, i) =>
        {
            var source = collector.Ids(CausalInputs.Text(r, "source", i));
            var target = collector.Ids(CausalInputs.Text(r, "target", i));
            int Position(string field, IReadOnlyList<int> ids) => r[field] is JsonValue v && v.TryGetValue<int>(out var p) && ActivationCollector.Resolve(p, ids.Count) is { } at ? at
                : throw new ActivityException($"dataset, row {i + 1}: expected an integer \"{field}\" inside the prompt's {ids.Count} tokens");
            var expected = Model.VocabularyCheck.AnswerToken(tokenizer, CausalInputs.Text(r, "expected", i), $"dataset, row {i + 1}");
            return (Set: r["set"]?.ToString() ?? "all", Source: source, Target: target, From: Position("source_position", source), To: Position("target_position", target), Expected: expected);
        }).ToList();
        var rng = new SeededRandom(input.Seed);
        var results = new JsonObject();
        var series = new List<(string, IReadOnlyList<double?>)>();
        var scales = input.Scales.Prepend(0).Distinct().ToList(); // f = 0 is the unpatched target
        using var noGrad = no_grad();
        foreach (var set in rows.GroupBy(r => r.Set))
        {
            var group = set.ToList();
            var points = new JsonArray();
            var curve = new List<double?>();
            foreach (var scale in scales)
            {
                context.CancellationToken.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var (p, rate) = Score(model, collector, group, layers, input.Hook, scale, input.Samples, input.Temperature, rng);
                points.Add(new JsonObject { ["scale"] = scale, ["pExpected"] = p, ["sampledRate"] = rate, ["patched"] = scale != 0 });
                curve.Add(p);
            }
            results[set.Key] = points;
            series.Add((set.Key, curve));
            context.Log($"{set.Key}: P(expected) {curve[0]:F3} unpatched → {string.Join(", ", scales.Skip(1).Select((s, k) => $"{curve[k + 1]:F3} at f={s}"))}");
        }
        var doc = new JsonObject
        {
            ["hook"] = PatchingSweep.Name(input.Hook), ["layers"] = new JsonArray(layers.Select(l => (JsonNode?)l).ToArray()),
            ["samples"] = input.Samples, ["temperature"] = input.Temperature, ["scaleZero"] = "unpatched", ["sets"] = results,
        };
        File.WriteAllText(context.OutputFile("results"), doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        GridPlot.Curves(context.OutputFile("plot"), scales.Select(s => s.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToList(), series,
            $"Transplant on {PatchingSweep.Name(input.Hook)}, layers {string.Join(",", layers)}", "P(expected)", null, null, "factor f (0 = unpatched)");
        return Task.CompletedTask;
    }

    private static (double P, double Rate) Score(HookedTransformer model, ActivationCollector collector,
        IReadOnlyList<(string Set, IReadOnlyList<int> Source, IReadOnlyList<int> Target, int From, int To, int Expected)> rows,
        IReadOnlyList<int> layers, PatchHook hook, double scale, int samples, double temperature, SeededRandom rng)
    {
        var (ids, mask) = collector.Pack(rows.Select(r => r.Target).ToList());
        var plan = new List<Intervention>();
        if (scale != 0)
        {
            var (sIds, sMask) = collector.Pack(rows.Select(r => r.Source).ToList());
            var names = layers.Select(l => PatchingSweep.HookName(hook, l)).ToList();
            var (_, cache) = model.RunWithCache(sIds, names.Contains, sMask);
            using (cache)
            {
                var rowIndex = Scalars.Range(rows.Count, device: ids.device);
                var from = tensor(rows.Select(r => (long)r.From).ToArray(), device: ids.device);
                var at = new bool[rows.Count, ids.shape[1]];
                for (var r = 0; r < rows.Count; r++)
                {
                    at[r, rows[r].To] = true;
                }
                foreach (var name in names)
                {
                    var vector = cache[name][rowIndex, from].mul(InterchangeRunner.S(scale)).unsqueeze(1); // [n, 1, d]: the source's vector × f
                    plan.Add(new Interchange(name, vector.detach().clone()) { RowMask = tensor(at, device: ids.device) });
                }
            }
        }
        var logits = Interventions.Run(model, ids, plan, mask);
        var last = tensor(rows.Select(r => (long)r.Target.Count - 1).ToArray(), device: ids.device);
        var next = logits[Scalars.Range(rows.Count, device: ids.device), last].to(ScalarType.Float32);
        var probabilities = F.softmax(next, -1);
        var expected = tensor(rows.Select(r => (long)r.Expected).ToArray(), device: ids.device);
        var p = probabilities.gather(1, expected.unsqueeze(1)).mean().item<float>();
        var tempered = F.softmax(next.Over(temperature), -1).cpu().to(ScalarType.Float64);
        var hits = 0;
        for (var r = 0; r < rows.Count; r++)
        {
            var cdf = tempered[r].cumsum(0).data<double>().ToArray();
            for (var s = 0; s < samples; s++)
            {
                var u = (rng.NextULong() >> 11) * (1.0 / (1UL << 53)) * cdf[^1];
                var token = Array.FindIndex(cdf, c => c >= u);
                hits += token == rows[r].Expected ? 1 : 0;
            }
        }
        return (p, hits / (double)(rows.Count * samples));
    }
}
