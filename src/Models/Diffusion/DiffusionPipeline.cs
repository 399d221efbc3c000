using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Diffusion;

/// <summary>What one denoising step saw and produced; tensors are valid during the callback only (clone to keep).</summary>
public sealed record DenoiseStep(int Index, double Timestep, Tensor Latents, Tensor Eps, Tensor X0);

/// <summary>A text-to-image request: prompts × one seed per prompt row (seed + row), as SD's pipeline call.</summary>
public sealed record SampleRequest
{
    public required IReadOnlyList<string> Prompts { get; init; }
    public string Negative { get; init; } = "";
    public long Seed { get; init; }
    public int Steps { get; init; } = 50;

    /// <summary>ddpm, ddim, pndm, euler, lms; null: the folder's scheduler class.</summary>
    public string? Scheduler { get; init; }
    public double Guidance { get; init; } = 7.5;
    public double Eta { get; init; }
    public int? Height { get; init; }
    public int? Width { get; init; }
}

/// <summary>
/// A Stable-Diffusion-style pipeline folder (diffusers' layout): UNet, optional VAE (none: a pixel-space model), CLIP
/// text encoder and tokenizer, scheduler config. Composable entry points: <see cref="EncodePrompts"/>,
/// <see cref="PredictNoise"/> (classifier-free guidance), <see cref="Denoise"/> (from index k to index m with a
/// per-step callback carrying x̂0), <see cref="Decode"/>; <see cref="Sample"/> is SD's text-to-image call.
/// </summary>
public sealed class DiffusionPipeline : IDisposable
{
    public const string IndexFile = "model_index.json";

    public DiffusionPipeline(UNet2DConditionModel unet, AutoencoderKL? vae, ClipTextModel textEncoder, ClipTokenizer tokenizer, SchedulerConfig scheduler)
    {
        Unet = unet;
        Vae = vae;
        TextEncoder = textEncoder;
        Tokenizer = tokenizer;
        SchedulerConfig = scheduler;
        if (textEncoder.Config.HiddenSize != unet.Config.CrossAttentionDim)
        {
            throw new CheckpointException($"the text encoder's width {textEncoder.Config.HiddenSize} differs from the UNet's cross_attention_dim {unet.Config.CrossAttentionDim}");
        }
    }

    public UNet2DConditionModel Unet { get; }
    public AutoencoderKL? Vae { get; }
    public ClipTextModel TextEncoder { get; }
    public ClipTokenizer Tokenizer { get; }
    public SchedulerConfig SchedulerConfig { get; }

    /// <summary>Extra entries of model_index.json kept on save (e.g. the toy world's description).</summary>
    public JsonObject Extra { get; init; } = new();

    /// <summary>The VAE's scaling factor (1 for a pixel-space model).</summary>
    public double LatentScale => Vae?.Config.ScalingFactor ?? 1.0;

    /// <summary>Pixels per latent cell (8 for SD, 1 for a pixel-space model).</summary>
    public int DownFactor => Vae is null ? 1 : 1 << Vae.Config.Downsamplings;

    public int DefaultSize => (Unet.Config.SampleSize ?? 64) * DownFactor;

    public static DiffusionPipeline Load(string dir)
    {
        if (!Directory.Exists(dir))
        {
            throw new CheckpointException($"{dir}: no such directory; expected a diffusers pipeline folder with {IndexFile}");
        }
        var indexPath = Path.Combine(dir, IndexFile);
        var index = ConfigReader.Open(indexPath).Json;
        bool Has(string part) => index[part] is JsonArray a && a.Count == 2 && a[1] is not null && a[1]!.GetValueKind() != System.Text.Json.JsonValueKind.Null;
        foreach (var part in new[] { "unet", "text_encoder", "tokenizer" })
        {
            if (!Has(part))
            {
                throw new CheckpointException($"{indexPath}: $.{part}: expected [library, class]; this runtime needs a UNet, a CLIP text encoder and its tokenizer");
            }
        }
        var unetConfig = UNetConfig.Read(Path.Combine(dir, "unet", "config.json"));
        var textConfig = ClipTextConfig.Read(Path.Combine(dir, "text_encoder", "config.json"));
        var schedulerPath = Path.Combine(dir, "scheduler", "scheduler_config.json");
        var scheduler = File.Exists(schedulerPath) ? SchedulerConfig.Read(schedulerPath) : new SchedulerConfig();
        var tokenizer = ClipTokenizer.Load(Path.Combine(dir, "tokenizer"), textConfig.MaxPositions);
        var unet = new UNet2DConditionModel(unetConfig);
        AutoencoderKL? vae = null;
        ClipTextModel? text = null;
        try
        {
            DiffusionCheckpoint.Load(unet, DiffusionCheckpoint.WeightFiles(Path.Combine(dir, "unet"), "diffusion_pytorch_model"));
            if (Has("vae"))
            {
                vae = new AutoencoderKL(VaeConfig.Read(Path.Combine(dir, "vae", "config.json")));
                DiffusionCheckpoint.Load(vae, DiffusionCheckpoint.WeightFiles(Path.Combine(dir, "vae"), "diffusion_pytorch_model"), DiffusionCheckpoint.RenameVae);
                if (vae.Config.LatentChannels != unetConfig.InChannels)
                {
                    throw new CheckpointException($"{dir}: the VAE's latent_channels {vae.Config.LatentChannels} differ from the UNet's in_channels {unetConfig.InChannels}");
                }
            }
            text = new ClipTextModel(textConfig);
            DiffusionCheckpoint.Load(text, DiffusionCheckpoint.WeightFiles(Path.Combine(dir, "text_encoder"), "model"), DiffusionCheckpoint.RenameText);
            if (tokenizer.VocabSize > textConfig.VocabSize)
            {
                throw new CheckpointException($"{dir}/tokenizer: {tokenizer.VocabSize} tokens, more than the text encoder's vocab_size {textConfig.VocabSize}");
            }
            var extra = index["pipelines"] is JsonObject o ? new JsonObject { ["pipelines"] = o.DeepClone() } : new JsonObject();
            var pipeline = new DiffusionPipeline(unet, vae, text, tokenizer, scheduler) { Extra = extra };
            pipeline.SetEval();
            return pipeline;
        }
        catch
        {
            unet.Dispose();
            vae?.Dispose();
            text?.Dispose();
            throw;
        }
    }

    /// <summary>Writes the folder in diffusers' layout (fp16: weights as <c>*.fp16.safetensors</c>, diffusers' variant naming).</summary>
    public void Save(string dir, bool fp16 = false)
    {
        Directory.CreateDirectory(dir);
        var suffix = fp16 ? ".fp16.safetensors" : ".safetensors";
        Write(Path.Combine(dir, "unet", "config.json"), Unet.Config.ToJson());
        DiffusionCheckpoint.Save(Unet, Path.Combine(dir, "unet", "diffusion_pytorch_model" + suffix), fp16);
        if (Vae is not null)
        {
            Write(Path.Combine(dir, "vae", "config.json"), Vae.Config.ToJson());
            DiffusionCheckpoint.Save(Vae, Path.Combine(dir, "vae", "diffusion_pytorch_model" + suffix), fp16);
        }
        Write(Path.Combine(dir, "text_encoder", "config.json"), TextEncoder.Config.ToJson());
        DiffusionCheckpoint.Save(TextEncoder, Path.Combine(dir, "text_encoder", "model" + suffix), fp16);
        Tokenizer.Save(Path.Combine(dir, "tokenizer"));
        Write(Path.Combine(dir, "scheduler", "scheduler_config.json"), SchedulerConfig.ToJson());
        JsonNode Pair(string? lib, string? cls) => new JsonArray(lib, cls);
        var index = new JsonObject
        {
            ["_class_name"] = "StableDiffusionPipeline",
            ["_diffusers_version"] = "0.35.2",
            ["unet"] = Pair("diffusers", "UNet2DConditionModel"),
            ["vae"] = Vae is null ? Pair(null, null) : Pair("diffusers", "AutoencoderKL"),
            ["text_encoder"] = Pair("transformers", "CLIPTextModel"),
            ["tokenizer"] = Pair("transformers", "CLIPTokenizer"),
            ["scheduler"] = Pair("diffusers", SchedulerConfig.ClassName),
            ["safety_checker"] = Pair(null, null),
            ["feature_extractor"] = Pair(null, null),
            ["requires_safety_checker"] = false,
        };
        foreach (var (k, v) in Extra)
        {
            index[k] = v?.DeepClone();
        }
        Write(Path.Combine(dir, IndexFile), index);
    }

    private static void Write(string path, JsonNode json)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
    }

    public void SetEval()
    {
        Unet.eval();
        Vae?.eval();
        TextEncoder.eval();
    }

    /// <summary>Token ids [B, 77] of prompts (padded and truncated as SD's pipeline does).</summary>
    public Tensor Tokenize(IEnumerable<string> prompts)
    {
        var rows = prompts.Select(Tokenizer.Encode).ToArray();
        return tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, Tokenizer.MaxLength]);
    }

    /// <summary>The text encoder's last hidden states [B, 77, D] of prompts (the UNet's context).</summary>
    public Tensor EncodePrompts(IEnumerable<string> prompts) => TextEncoder.Encode(Tokenize(prompts));

    /// <summary>
    /// The guided noise prediction: ε_u + w(ε_c − ε_u) from one batched call, uncond rows first (w ≤ 1: the conditional
    /// prediction alone, as diffusers skips guidance there). <paramref name="input"/> is the scheduler-scaled latent.
    /// </summary>
    public Tensor PredictNoise(Tensor input, double timestep, Tensor? uncond, Tensor cond, double guidance)
    {
        var t = tensor(timestep, ScalarType.Float32);
        if (uncond is null || guidance <= 1.0)
        {
            return Unet.Forward(input, t, cond);
        }
        var both = Unet.Forward(cat([input, input], 0), t, cat([uncond, cond], 0));
        var parts = both.chunk(2, 0);
        return Guide(parts[0], parts[1], guidance);
    }

    /// <summary>Classifier-free guidance: ε_u + w(ε_c − ε_u).</summary>
    public static Tensor Guide(Tensor uncond, Tensor cond, double w) => uncond.Plus((cond - uncond).mul(Scalars.Of(w)));

    /// <summary>
    /// Runs scheduler steps [from, to) from the given latent (scheduler-native: at index from's noise level), with
    /// guidance w, calling <paramref name="onStep"/> after each step; returns the latent after step to−1. Each step runs
    /// in its own dispose scope; only the carried latent survives it.
    /// </summary>
    public Tensor Denoise(Scheduler scheduler, Tensor latents, Tensor? uncond, Tensor cond, double guidance, int from = 0, int? to = null,
        Action<DenoiseStep>? onStep = null, Generator? generator = null, CancellationToken cancel = default)
    {
        var end = to ?? scheduler.Timesteps.Length;
        if (from < 0 || end > scheduler.Timesteps.Length || from > end)
        {
            throw new ArgumentOutOfRangeException(nameof(from), $"steps [{from}, {end}) outside the schedule's {scheduler.Timesteps.Length} steps");
        }
        if (from > 0 && !scheduler.CanResume)
        {
            throw new ArgumentException($"the {scheduler.Name} scheduler keeps a history and cannot start at step {from}; use ddim for partial or resumed runs");
        }
        var x = latents.alias();
        for (var i = from; i < end; i++)
        {
            cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var input = scheduler.ScaleModelInput(x, i);
            var eps = PredictNoise(input, scheduler.Timesteps[i], uncond, cond, guidance);
            var step = scheduler.Step(eps, i, x, generator);
            onStep?.Invoke(new DenoiseStep(i, scheduler.Timesteps[i], step.Prev, eps, step.X0));
            x.Dispose();
            x = step.Prev.MoveToOuterDisposeScope();
        }
        return x;
    }

    /// <summary>Scaled latents → image in about [−1, 1] (a pixel-space model returns its sample).</summary>
    public Tensor Decode(Tensor latents) => Vae is null ? latents.alias() : Vae.Decode(latents.mul(Scalars.Of(1 / LatentScale)));

    /// <summary>Image in [−1, 1] → scaled latents (the posterior mean × scaling factor).</summary>
    public Tensor EncodeImage(Tensor image) => Vae is null ? image.alias() : Vae.EncodeMean(image).mul(Scalars.Of(LatentScale));

    /// <summary>Initial noise for prompt row b from seed + b, so a row's image does not depend on the batch.</summary>
    public Tensor InitialNoise(int rows, long seed, int height, int width)
    {
        var c = Unet.Config.InChannels;
        var list = new List<Tensor>();
        for (var b = 0; b < rows; b++)
        {
            using var g = new Generator((ulong)(seed + b));
            list.Add(randn([1, c, height / DownFactor, width / DownFactor], generator: g));
        }
        return cat(list, 0);
    }

    /// <summary>SD's text-to-image call: images [B, 3, H, W] in [−1, 1].</summary>
    public Tensor Sample(SampleRequest r, Action<DenoiseStep>? onStep = null, CancellationToken cancel = default)
    {
        int h = r.Height ?? DefaultSize, w = r.Width ?? DefaultSize;
        if (h < DownFactor || w < DownFactor || h > 4096 || w > 4096)
        {
            throw new ArgumentOutOfRangeException(nameof(r), $"image size {h}×{w} outside [{DownFactor}, 4096]");
        }
        var scheduler = Scheduler.Create(r.Scheduler, SchedulerConfig);
        scheduler.SetTimesteps(r.Steps);
        if (scheduler is DdimScheduler ddim)
        {
            ddim.Eta = r.Eta;
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var cond = EncodePrompts(r.Prompts);
        var uncond = r.Guidance > 1 ? EncodePrompts(Enumerable.Repeat(r.Negative, r.Prompts.Count)) : null;
        var latents = InitialNoise(r.Prompts.Count, r.Seed, h, w).mul(Scalars.Of(scheduler.InitNoiseSigma));
        using var generator = new Generator((ulong)(r.Seed ^ 0x5DEECE66DL));
        var final = Denoise(scheduler, latents, uncond, cond, r.Guidance, onStep: onStep, generator: generator, cancel: cancel);
        return Decode(final).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        Unet.Dispose();
        Vae?.Dispose();
        TextEncoder.Dispose();
    }
}
