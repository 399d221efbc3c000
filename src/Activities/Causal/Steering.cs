using System.Globalization;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Activities.Causal;

/// <summary>mean-diff: CAA's difference of means at one position; actadd: ActAdd's whole-prompt difference added at the front.</summary>
public enum SteeringMethod { MeanDiff, Actadd }

/// <summary>
/// A steering vector per layer (vector.safetensors: <c>L{l}</c> [d] for mean-diff, [T, d] for ActAdd; metadata: method,
/// hook, layers, the mean activation norm per layer for ‖c·v‖/‖h‖).
/// </summary>
public sealed record SteeringVector(SteeringMethod Method, PatchHook Hook, IReadOnlyList<int> Layers, IReadOnlyDictionary<int, Tensor> Vectors, IReadOnlyDictionary<int, double> Norms) : IDisposable
{
    public void Write(string path) => SafetensorsFile.Write(path, Vectors.Select(p => ($"L{p.Key}", p.Value)), new Dictionary<string, string>
    {
        ["pipelines"] = "steering-vector/1",
        ["method"] = Method == SteeringMethod.MeanDiff ? "mean-diff" : "actadd",
        ["hook"] = PatchingSweep.Name(Hook),
        ["layers"] = string.Join(",", Layers),
        ["norms"] = string.Join(",", Layers.Select(l => Norms[l].ToString("R", CultureInfo.InvariantCulture))),
    });

    public static SteeringVector Read(string path, string name = "vector")
    {
        try
        {
            using var file = SafetensorsFile.Open(path);
            var meta = file.Metadata ?? throw new ActivityException($"{name}: no metadata; not a steering vector");
            string Field(string key) => meta[key]?.GetValue<string>() ?? throw new ActivityException($"{name}: metadata lacks \"{key}\"; not a steering vector");
            if (Field("pipelines") != "steering-vector/1")
            {
                throw new ActivityException($"{name}: not a steering vector (pipelines.steering-vector/1)");
            }
            var layers = Field("layers").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToList();
            var norms = Field("norms").Split(',').Select(s => double.Parse(s, CultureInfo.InvariantCulture)).ToList();
            var hook = Enum.GetValues<PatchHook>().First(h => PatchingSweep.Name(h) == Field("hook"));
            return new SteeringVector(Field("method") == "actadd" ? SteeringMethod.Actadd : SteeringMethod.MeanDiff, hook, layers,
                layers.ToDictionary(l => l, l => file.Read($"L{l}")), layers.Select((l, i) => (l, norms[i])).ToDictionary(p => p.l, p => p.Item2));
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or CheckpointException or ArgumentException)
        {
            throw new ActivityException($"{name}: not a steering vector ({e.Message.Split('\n')[0]})");
        }
    }

    /// <summary>The intervention adding c·v at <paramref name="layer"/> to prompts of <paramref name="width"/> tokens (ActAdd: at the front).</summary>
    public Intervention At(int layer, double scale, int width, Tensor? replacement = null)
    {
        var v = replacement ?? Vectors[layer];
        var hook = PatchingSweep.HookName(Hook, layer);
        if (Method == SteeringMethod.MeanDiff)
        {
            return new Steer(hook, v.to(TorchRuntime.ComputeDevice), scale);
        }
        var front = Math.Min(width, (int)v.shape[0]);
        var full = zeros([width, v.shape[1]]);
        full[TensorIndex.Slice(0, front)] = v[TensorIndex.Slice(0, front)];
        return new Steer(hook, full.to(TorchRuntime.ComputeDevice), scale);
    }

    public void Dispose()
    {
        foreach (var v in Vectors.Values)
        {
            v.Dispose();
        }
    }
}

/// <summary>Building steering vectors from paired prompts, and measuring their dose-response and side effects.</summary>
public static class Steering
{
    /// <summary>
    /// mean-diff: mean(h⁺) − mean(h⁻) at <paramref name="position"/> over the two sets; actadd: h(p⁺) − h(p⁻) over the first
    /// prompt of each set, whole prompts (the shorter padded by repeating its last token, as ActAdd pads with spaces).
    /// </summary>
    public static SteeringVector Build(ActivationCollector collector, SteeringMethod method, PatchHook hook, IReadOnlyList<int> layers,
        IReadOnlyList<string> positiveTexts, IReadOnlyList<string> negativeTexts, int position, CancellationToken ct = default)
    {
        var positives = positiveTexts.Select(collector.Ids).ToList();
        var negatives = negativeTexts.Select(collector.Ids).ToList();
        using var pos = collector.Collect(positives, hook, layers, [position], ct: ct); // [N, L, 1, d]
        using var neg = collector.Collect(negatives, hook, layers, [position], ct: ct);
        var norms = layers.Select((l, i) => (l, cat([pos[.., i, 0], neg[.., i, 0]], 0).norm(-1).mean().item<float>())).ToDictionary(p => p.l, p => (double)p.Item2);
        var vectors = new Dictionary<int, Tensor>();
        if (method == SteeringMethod.MeanDiff)
        {
            for (var i = 0; i < layers.Count; i++)
            {
                vectors[layers[i]] = (pos[.., i, 0].mean([0]) - neg[.., i, 0].mean([0])).contiguous();
            }
        }
        else
        {
            var width = Math.Max(positives[0].Count, negatives[0].Count);
            var all = Enumerable.Range(0, width).ToList();
            var pad = new Func<IReadOnlyList<int>, IReadOnlyList<int>>(ids => ids.Concat(Enumerable.Repeat(ids[^1], width - ids.Count)).ToList());
            using var p = collector.Collect([pad(positives[0])], hook, layers, all, ct: ct); // [1, L, T, d]
            using var n = collector.Collect([pad(negatives[0])], hook, layers, all, ct: ct);
            for (var i = 0; i < layers.Count; i++)
            {
                vectors[layers[i]] = (p[0, i] - n[0, i]).contiguous();
            }
        }
        return new SteeringVector(method, hook, layers, vectors, norms);
    }

    /// <summary>One point of a dose-response curve.</summary>
    public sealed record Point(double Scale, double Effect, double Perplexity, double Kl, double Ratio);

    /// <summary>
    /// The effect (mean logit difference target − foil at the last token, or mean log P(target) without a foil) and the
    /// side effects on neutral text (perplexity, KL(steered ‖ unsteered) of next-token distributions) at each scale.
    /// </summary>
    public static List<Point> Evaluate(HookedTransformer model, ActivationCollector collector, SteeringVector vector, int layer, IReadOnlyList<double> scales,
        IReadOnlyList<(IReadOnlyList<int> Ids, int Target, int? Foil)> prompts, IReadOnlyList<IReadOnlyList<int>> neutral, Tensor? replacement = null, CancellationToken ct = default)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var (ids, mask) = collector.Pack(prompts.Select(p => p.Ids).ToList());
        var (nIds, nMask) = collector.Pack(neutral);
        var last = tensor(prompts.Select(p => (long)p.Ids.Count - 1).ToArray(), device: ids.device);
        var rows = Scalars.Range(prompts.Count, device: ids.device);
        var target = tensor(prompts.Select(p => (long)p.Target).ToArray(), device: ids.device);
        var foil = prompts.All(p => p.Foil is not null) ? tensor(prompts.Select(p => (long)p.Foil!.Value).ToArray(), device: ids.device) : null;
        var clean = F.log_softmax(model.Forward(nIds, nMask), -1);
        var v = replacement ?? vector.Vectors[layer];
        var norm = v.norm().item<float>() / Math.Sqrt(vector.Method == SteeringMethod.Actadd ? v.shape[0] : 1);
        var points = new List<Point>();
        foreach (var scale in scales)
        {
            ct.ThrowIfCancellationRequested();
            using var step = NewDisposeScope();
            var logits = Interventions.Run(model, ids, [vector.At(layer, scale, (int)ids.shape[1], replacement)], mask);
            var at = logits[rows, last];
            var effect = foil is null ? F.log_softmax(at, -1)[rows, target] : at[rows, target] - at[rows, foil];
            var steered = F.log_softmax(Interventions.Run(model, nIds, [vector.At(layer, scale, (int)nIds.shape[1], replacement)], nMask), -1);
            var next = nIds[.., TensorIndex.Slice(1)];
            var real = nMask[.., TensorIndex.Slice(1)].to(ScalarType.Float32);
            var nll = -steered[.., TensorIndex.Slice(0, -1)].gather(-1, next.unsqueeze(-1)).squeeze(-1);
            var perplexity = Math.Exp((nll * real).sum().item<float>() / Math.Max(1, real.sum().item<float>()));
            var positions = nMask.to(ScalarType.Float32);
            var kl = ((steered.exp() * (steered - clean)).sum(-1) * positions).sum().item<float>() / Math.Max(1, positions.sum().item<float>());
            points.Add(new Point(scale, effect.mean().item<float>(), perplexity, kl, Math.Abs(scale) * norm / Math.Max(1e-12, vector.Norms[layer])));
        }
        return points;
    }
}
