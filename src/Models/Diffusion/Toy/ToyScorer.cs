using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Common;
using Pipelines.Models.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Diffusion.Toy;

/// <summary>What the scorer reads off a batch of images.</summary>
public sealed record ScorerOutput(Tensor ShapeLogits, Tensor ColourLogits, Tensor Size, Tensor Features);

/// <summary>The scorer's clean accuracy on fresh procedural images (reported next to every result it scores).</summary>
public sealed record ScorerAccuracy(double Shape, double Colour, double SizeCorrelation, int Images);

/// <summary>
/// The toy world's stand-in for ResNet-50 (classification) and CLIP (similarity), research diffusion.md §6.3:
/// Conv(3→32)–SiLU–Conv(32→32, s2)–SiLU–Conv(32→64)–SiLU–Conv(64→64, s2)–SiLU–GAP–Linear(64→64)–SiLU, the 64-d feature,
/// with shape (4), colour (4) and size (regression) heads. Trained on fresh procedural batches with noise, so it reads
/// the generative factors, and differentiable, so sliders and guidance can use it. Saved as config.json + model.safetensors.
/// </summary>
public sealed class ToyScorer : nn.Module
{
#pragma warning disable IDE1006
    public readonly DConv2d conv1, conv2, conv3, conv4;
    public readonly DLinear fc, shape_head, colour_head, size_head;
#pragma warning restore IDE1006

    public ToyScorer(int side) : base("scorer")
    {
        Side = side;
        conv1 = new DConv2d(3, 32, 3, padding: 1);
        conv2 = new DConv2d(32, 32, 3, stride: 2, padding: 1);
        conv3 = new DConv2d(32, 64, 3, padding: 1);
        conv4 = new DConv2d(64, 64, 3, stride: 2, padding: 1);
        fc = new DLinear(64, 64);
        shape_head = new DLinear(64, ToyWorld.Shapes.Length);
        colour_head = new DLinear(64, ToyWorld.Colours.Length);
        size_head = new DLinear(64, 1);
        foreach (var (name, m) in new (string, nn.Module)[] { ("conv1", conv1), ("conv2", conv2), ("conv3", conv3), ("conv4", conv4), ("fc", fc), ("shape_head", shape_head), ("colour_head", colour_head), ("size_head", size_head) })
        {
            register_module(name, m);
        }
    }

    public int Side { get; }

    /// <summary>Images [B, 3, S, S] in [−1, 1] → logits, size (fraction of the side) and the 64-d feature.</summary>
    public ScorerOutput Forward(Tensor images)
    {
        var h = F.silu(conv1.Forward(images));
        h = F.silu(conv2.Forward(h));
        h = F.silu(conv3.Forward(h));
        h = F.silu(conv4.Forward(h));
        var features = F.silu(fc.Forward(h.mean([2L, 3L])));
        return new ScorerOutput(shape_head.Forward(features), colour_head.Forward(features), size_head.Forward(features).squeeze(1), features);
    }

    /// <summary>Trains on fresh batches (background noise varied, Gaussian pixel noise σ ∈ [0, 0.1]); cross-entropy + size MSE.</summary>
    public static ToyScorer Train(ToyWorld world, int steps, long seed, Action<int, double>? progress = null, CancellationToken cancel = default)
    {
        var scorer = new ToyScorer(world.Side);
        DiffusionInit.Reset(scorer, seed);
        var r = new SeededRandom(seed + 17);
        using var optimizer = new StableAdamW(scorer.parameters(), 2e-3, weightDecay: 1e-4);
        scorer.train();
        for (var step = 0; step < steps; step++)
        {
            cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var items = Enumerable.Range(0, 64).Select(_ => world.RandomItem(r)).ToArray();
            var images = world.Render(items, r, 0.01 + 0.05 * r.NextDouble());
            using var g = new Generator((ulong)(seed * 7919 + step));
            images = images.Plus(randn(images.shape, generator: g).Times(0.1 * r.NextDouble()));
            var o = scorer.Forward(images);
            var shape = tensor(items.Select(i => (long)i.Shape).ToArray());
            var colour = tensor(items.Select(i => (long)i.Colour).ToArray());
            var size = tensor(items.Select(i => (float)((i.Size - ToyWorld.MinSize) / (ToyWorld.MaxSize - ToyWorld.MinSize))).ToArray());
            var loss = F.cross_entropy(o.ShapeLogits, shape).Plus(F.cross_entropy(o.ColourLogits, colour)).Plus(F.mse_loss(o.Size, size));
            optimizer.zero_grad();
            loss.backward();
            optimizer.step();
            if (step % 50 == 0 || step == steps - 1)
            {
                progress?.Invoke(step + 1, loss.item<float>());
            }
        }
        scorer.eval();
        return scorer;
    }

    /// <summary>Accuracy on fresh clean images (seeded, independent of training).</summary>
    public ScorerAccuracy Evaluate(ToyWorld world, int images = 512, long seed = 123_456)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var r = new SeededRandom(seed);
        var items = Enumerable.Range(0, images).Select(_ => world.RandomItem(r)).ToArray();
        var o = Forward(world.Render(items, r));
        var shape = o.ShapeLogits.argmax(1).data<long>().ToArray();
        var colour = o.ColourLogits.argmax(1).data<long>().ToArray();
        var size = o.Size.data<float>().ToArray();
        var truth = items.Select(i => (i.Size - ToyWorld.MinSize) / (ToyWorld.MaxSize - ToyWorld.MinSize)).ToArray();
        return new ScorerAccuracy(
            items.Where((it, i) => shape[i] == it.Shape).Count() / (double)images,
            items.Where((it, i) => colour[i] == it.Colour).Count() / (double)images,
            Pearson(size.Select(x => (double)x).ToArray(), truth), images);
    }

    internal static double Pearson(double[] a, double[] b)
    {
        double ma = a.Average(), mb = b.Average();
        double num = a.Zip(b).Sum(p => (p.First - ma) * (p.Second - mb));
        double den = Math.Sqrt(a.Sum(x => (x - ma) * (x - ma)) * b.Sum(x => (x - mb) * (x - mb)));
        return den == 0 ? 0 : num / den;
    }

    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "config.json"), new JsonObject
        {
            ["model_type"] = "pipelines-toy-scorer", ["image_size"] = Side, ["shapes"] = new JsonArray(ToyWorld.Shapes.Select(s => (JsonNode?)s).ToArray()),
            ["colours"] = new JsonArray(ToyWorld.Colours.Select(s => (JsonNode?)s).ToArray()), ["feature_dim"] = 64,
        }.ToJsonString());
        DiffusionCheckpoint.Save(this, Path.Combine(dir, "model.safetensors"));
    }

    public static ToyScorer Load(string dir)
    {
        var cfg = ConfigReader.Open(Path.Combine(dir, "config.json"));
        if (cfg.String("model_type") != "pipelines-toy-scorer")
        {
            throw new CheckpointException($"{cfg.Path}: $.model_type: expected \"pipelines-toy-scorer\"");
        }
        var side = cfg.Int("image_size");
        if (side is not (16 or 32))
        {
            throw new CheckpointException($"{cfg.Path}: $.image_size: expected 16 or 32");
        }
        var scorer = new ToyScorer(side);
        DiffusionCheckpoint.Load(scorer, [Path.Combine(dir, "model.safetensors")]);
        scorer.eval();
        return scorer;
    }
}
