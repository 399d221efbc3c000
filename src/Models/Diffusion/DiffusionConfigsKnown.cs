namespace Pipelines.Models.Diffusion;

/// <summary>
/// Known configurations: Stable Diffusion 1.x's (research diffusion.md §1.2, §1.5, §1.7) and diffusers' tiny test
/// configs (§1.8), plus a factory for random pipelines in the real layout (tests, examples, toy training).
/// </summary>
public static class KnownConfigs
{
    public static UNetConfig StableDiffusionUNet => new() { CrossAttentionDim = 768, SampleSize = 64 };

    public static VaeConfig StableDiffusionVae => new() { BlockOutChannels = [128, 256, 512, 512], LayersPerBlock = 2 };

    public static ClipTextConfig StableDiffusionText => new();

    public static UNetConfig TinyUNet => new()
    {
        InChannels = 4, OutChannels = 4, SampleSize = 16, BlockOutChannels = [32, 64], LayersPerBlock = 1,
        DownBlockTypes = ["CrossAttnDownBlock2D", "DownBlock2D"], UpBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D"],
        CrossAttentionDim = 32, Heads = [2, 2], NormGroups = 32,
    };

    public static VaeConfig TinyVae => new() { BlockOutChannels = [32, 64], LayersPerBlock = 1, LatentChannels = 4, NormGroups = 32 };

    public static ClipTextConfig TinyText => new() { HiddenSize = 32, IntermediateSize = 37, Layers = 2, Heads = 4, VocabSize = 1000, MaxPositions = 77 };

    /// <summary>The words of the tiny test vocabulary (a CLIP BPE over them, <see cref="ClipTokenizer.ForWords"/>).</summary>
    public static readonly string[] TinyWords =
    [
        "a", "photo", "of", "the", "red", "green", "blue", "yellow", "circle", "square", "triangle", "cross",
        "small", "large", "striped", "solid", "cat", "dog", "painting", "by", "style",
    ];

    /// <summary>A random pipeline with the given configs (VAE null: pixel space), seeded.</summary>
    public static DiffusionPipeline Random(UNetConfig unet, VaeConfig? vae, ClipTextConfig text, ClipTokenizer tokenizer, SchedulerConfig scheduler, long seed)
    {
        var u = new UNet2DConditionModel(unet);
        DiffusionInit.Reset(u, seed);
        AutoencoderKL? v = null;
        if (vae is not null)
        {
            v = new AutoencoderKL(vae);
            DiffusionInit.Reset(v, seed + 1);
        }
        var t = new ClipTextModel(text);
        DiffusionInit.Reset(t, seed + 2);
        var p = new DiffusionPipeline(u, v, t, tokenizer, scheduler);
        p.SetEval();
        return p;
    }

    /// <summary>diffusers' tiny test pipeline (§1.8) with SD's scheduler config and a CLIP BPE over <see cref="TinyWords"/>.</summary>
    public static DiffusionPipeline Tiny(long seed = 0) =>
        Random(TinyUNet, TinyVae, TinyText, ClipTokenizer.ForWords(TinyWords, 77), SchedulerConfig.StableDiffusion, seed);
}
