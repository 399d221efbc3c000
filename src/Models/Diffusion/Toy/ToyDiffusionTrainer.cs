using System.Text.Json.Nodes;
using Pipelines.Models.Common;
using Pipelines.Models.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Diffusion.Toy;

/// <summary>Settings of the toy denoiser's training (research diffusion.md §6.2, §6.5).</summary>
public sealed record ToyDiffusionOptions
{
    public int Size { get; init; } = 16;
    public bool Textures { get; init; }
    public int Steps { get; init; } = 5000;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 1e-3;
    public long Seed { get; init; }
    public double WordDropout { get; init; } = 0.15;
    public double EmptyPrompts { get; init; } = 0.1;
}

/// <summary>
/// Trains the toy world's text-to-image model: a pixel-space UNet2DConditionModel in diffusers' layout (in/out 3,
/// blocks [32, 64], one layer each, DownBlock2D + CrossAttnDownBlock2D, attention at the half-resolution level, 2 heads,
/// 8 groups) conditioned by cross-attention on a one-layer CLIP text encoder trained jointly (context length 8, a CLIP
/// BPE over the world's words), ε-MSE under DDPM's linear schedule (1e-4 → 0.02), AdamW. The result is a pipeline
/// folder any diffusion activity loads like a Stable Diffusion folder (no VAE: latents are pixels).
/// </summary>
public static class ToyDiffusionTrainer
{
    public const int ContextLength = 8;

    public static UNetConfig UNet(int side) => new()
    {
        InChannels = 3, OutChannels = 3, SampleSize = side, BlockOutChannels = [32, 64], LayersPerBlock = 1,
        DownBlockTypes = ["DownBlock2D", "CrossAttnDownBlock2D"], UpBlockTypes = ["CrossAttnUpBlock2D", "UpBlock2D"],
        CrossAttentionDim = 32, Heads = [2, 2], NormGroups = 8,
    };

    public static SchedulerConfig Scheduler => new()
    {
        ClassName = "DDIMScheduler", BetaStart = 1e-4, BetaEnd = 0.02, BetaSchedule = "linear", StepsOffset = 0, SetAlphaToOne = true,
        ClipSample = true, TimestepSpacing = "leading",
    };

    /// <summary>A fresh (random) toy pipeline for a world.</summary>
    public static DiffusionPipeline Create(ToyWorld world, long seed)
    {
        var tokenizer = ClipTokenizer.ForWords(ToyWorld.Words, ContextLength);
        var text = new ClipTextConfig { HiddenSize = 32, IntermediateSize = 64, Layers = 1, Heads = 2, MaxPositions = ContextLength, VocabSize = tokenizer.VocabSize };
        var pipe = KnownConfigs.Random(UNet(world.Side), null, text, tokenizer, Scheduler, seed);
        return new DiffusionPipeline(pipe.Unet, null, pipe.TextEncoder, pipe.Tokenizer, pipe.SchedulerConfig)
        {
            Extra = new JsonObject { ["pipelines"] = new JsonObject { ["toy_world"] = new JsonObject { ["size"] = world.Side, ["textures"] = world.UsesTextures } } },
        };
    }

    /// <summary>The world a toy pipeline was trained on (from model_index.json), or null for other pipelines.</summary>
    public static ToyWorld? WorldOf(DiffusionPipeline pipe) =>
        pipe.Extra["pipelines"]?["toy_world"] is JsonObject w ? new ToyWorld(w["size"]?.GetValue<int>() ?? 16, w["textures"]?.GetValue<bool>() ?? false) : null;

    /// <summary>Trains; <paramref name="progress"/> gets (step, EMA loss). Returns the pipeline and the loss every 50 steps.</summary>
    public static (DiffusionPipeline Pipeline, List<(int Step, double Loss)> Losses) Train(ToyDiffusionOptions o, Action<int, double>? progress = null, CancellationToken cancel = default)
    {
        var world = new ToyWorld(o.Size, o.Textures);
        var pipe = Create(world, o.Seed);
        var r = new SeededRandom(o.Seed + 1);
        var alphas = tensor(pipe.SchedulerConfig.AlphasCumprod());
        var parameters = pipe.Unet.parameters().Concat(pipe.TextEncoder.parameters()).ToList();
        using var optimizer = new StableAdamW(parameters, o.LearningRate, weightDecay: 1e-4);
        pipe.Unet.train();
        pipe.TextEncoder.train();
        var losses = new List<(int, double)>();
        double ema = double.NaN;
        for (var step = 0; step < o.Steps; step++)
        {
            cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var (images, prompts, _) = world.Batch(o.BatchSize, r, o.WordDropout, o.EmptyPrompts);
            using var g = new Generator((ulong)(o.Seed * 1_000_003 + step));
            var t = randint(0, pipe.SchedulerConfig.NumTrainTimesteps, [o.BatchSize], generator: g);
            var noise = randn(images.shape, generator: g);
            var a = alphas.index_select(0, t).view(-1, 1, 1, 1);
            var xt = (a.sqrt() * images).Plus(a.OneMinus().sqrt() * noise);
            var ctx = pipe.EncodePrompts(prompts);
            var loss = F.mse_loss(pipe.Unet.Forward(xt, t, ctx), noise);
            optimizer.zero_grad();
            loss.backward();
            // Linear warm-up over the first 100 steps.
            optimizer.LearningRate = o.LearningRate * Math.Min(1.0, (step + 1) / 100.0);
            optimizer.step();
            var value = loss.item<float>();
            ema = double.IsNaN(ema) ? value : 0.95 * ema + 0.05 * value;
            if (step % 50 == 0 || step == o.Steps - 1)
            {
                losses.Add((step + 1, ema));
                progress?.Invoke(step + 1, ema);
            }
        }
        alphas.Dispose();
        pipe.SetEval();
        foreach (var p in parameters)
        {
            p.requires_grad = false;
        }
        return (pipe, losses);
    }

    /// <summary>
    /// Generation fidelity: samples every colour × shape prompt <paramref name="perPrompt"/> times (seeded) and reports the
    /// scorer's agreement with the prompted shape and colour.
    /// </summary>
    public static (double Shape, double Colour) Fidelity(DiffusionPipeline pipe, ToyScorer scorer, double guidance, int steps = 50, int perPrompt = 8, long seed = 0, string scheduler = "ddim")
    {
        var prompts = ToyWorld.ColourShapePrompts();
        using var scope = NewDisposeScope();
        var images = pipe.Sample(new SampleRequest
        {
            Prompts = prompts.SelectMany(p => Enumerable.Repeat(p.Prompt, perPrompt)).ToList(), Seed = seed, Steps = steps, Guidance = guidance, Scheduler = scheduler,
        });
        using var noGrad = no_grad();
        var o = scorer.Forward(images);
        var shape = o.ShapeLogits.argmax(1).data<long>().ToArray();
        var colour = o.ColourLogits.argmax(1).data<long>().ToArray();
        var expected = prompts.SelectMany(p => Enumerable.Repeat(p, perPrompt)).ToArray();
        return (expected.Where((e, i) => shape[i] == e.Shape).Count() / (double)expected.Length, expected.Where((e, i) => colour[i] == e.Colour).Count() / (double)expected.Length);
    }
}
