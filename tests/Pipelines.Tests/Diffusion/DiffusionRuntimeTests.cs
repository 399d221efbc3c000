using Pipelines.Models.Checkpoints;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Runtime;
using Xunit;
using static TorchSharp.torch;

namespace Pipelines.Tests.Diffusion;

/// <summary>
/// The diffusion runtime against independent facts: the key sets, shapes and parameter totals research diffusion.md
/// §1.3 and §1.8 computed from diffusers' module code, the literal timestep lists of §2.2, scheduler identities, and an
/// independent forward written from the spec (<see cref="DiffusionReference"/>).
/// </summary>
public sealed class DiffusionRuntimeTests
{
    static DiffusionRuntimeTests() => TorchRuntime.EnsureLoaded();

    private static (int Tensors, long Params) Count(nn.Module m) => (m.named_parameters().Count(), m.parameters().Sum(p => p.numel()));

    [Fact]
    public void TinyConfigsHaveTheKeysShapesAndTotalsOfDiffusersTestModels()
    {
        using var p = KnownConfigs.Tiny();
        Assert.Equal((208, 792_964L), Count(p.Unet));
        Assert.Equal((124, 658_375L), Count(p.Vae!));
        Assert.Equal((36, 48_106L), Count(p.TextEncoder));
        var shapes = p.Unet.named_parameters().ToDictionary(x => x.name, x => x.parameter.shape);
        Assert.Equal([32L, 4, 3, 3], shapes["conv_in.weight"]);
        Assert.Equal([128L, 32], shapes["time_embedding.linear_1.weight"]);
        Assert.Equal([32L, 32], shapes["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"]);
        Assert.Equal([256L, 32], shapes["down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"]);
        Assert.Equal([32L, 128], shapes["down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight"]);
        Assert.Equal([64L, 32, 1, 1], shapes["down_blocks.1.resnets.0.conv_shortcut.weight"]);
        Assert.Equal([512L, 64], shapes["mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"]);
        Assert.Equal([64L, 128, 1, 1], shapes["up_blocks.0.resnets.0.conv_shortcut.weight"]);
        Assert.Equal([64L, 96, 1, 1], shapes["up_blocks.0.resnets.1.conv_shortcut.weight"]);
        Assert.Equal([32L, 96, 3, 3], shapes["up_blocks.1.resnets.0.conv1.weight"]);
        Assert.Equal([32L, 64, 3, 3], shapes["up_blocks.1.resnets.1.conv1.weight"]);
        Assert.Equal([4L, 32, 3, 3], shapes["conv_out.weight"]);
        Assert.DoesNotContain("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q.bias", shapes.Keys);
        var vae = p.Vae!.named_parameters().ToDictionary(x => x.name, x => x.parameter.shape);
        Assert.Equal([8L, 64, 3, 3], vae["encoder.conv_out.weight"]);
        Assert.Equal([8L, 8, 1, 1], vae["quant_conv.weight"]);
        Assert.Equal([64L, 4, 3, 3], vae["decoder.conv_in.weight"]);
        Assert.Equal([32L, 64, 3, 3], vae["decoder.up_blocks.1.resnets.0.conv1.weight"]);
        Assert.Equal([64L], vae["decoder.mid_block.attentions.0.to_q.bias"]);
        var text = p.TextEncoder.named_parameters().ToDictionary(x => x.name, x => x.parameter.shape);
        Assert.Equal([1000L, 32], text["text_model.embeddings.token_embedding.weight"]);
        Assert.Equal([37L, 32], text["text_model.encoder.layers.1.mlp.fc1.weight"]);
    }

    [Fact]
    public void StableDiffusionConfigsInstantiateWithTheModelCardTotals()
    {
        // Built with uninitialised storage (never touched), so no weights are needed and little memory is committed.
        using (var unet = new UNet2DConditionModel(KnownConfigs.StableDiffusionUNet))
        {
            Assert.Equal((686, 859_520_964L), Count(unet));
            var heads = unet.Attentions().First(a => a.Path.StartsWith("down_blocks.0", StringComparison.Ordinal)).Heads;
            Assert.Equal(8, heads);
        }
        using (var vae = new AutoencoderKL(KnownConfigs.StableDiffusionVae))
        {
            Assert.Equal((248, 83_653_863L), Count(vae));
        }
        using var text = new ClipTextModel(KnownConfigs.StableDiffusionText);
        Assert.Equal((196, 123_060_480L), Count(text));
    }

    [Fact]
    public void TimestepListsEqualDiffusersLiteralLists()
    {
        var sd = SchedulerConfig.StableDiffusion;
        var ddim = new DdimScheduler(sd);
        ddim.SetTimesteps(50);
        Assert.Equal(Enumerable.Range(0, 50).Select(i => 981.0 - 20 * i), ddim.Timesteps);
        Assert.Equal(Enumerable.Range(0, 50).Select(i => 999.0 - 20 * i), Scheduler.Spacing("trailing", 1000, 50, 0, true));
        var lin = Scheduler.Spacing("linspace", 1000, 50, 0, true);
        Assert.Equal([999.0, 979, 958, 938], lin.Take(4));
        Assert.Equal([20.0, 0], lin.TakeLast(2));
        var pndm = new PndmScheduler(sd);
        pndm.SetTimesteps(50);
        Assert.Equal(51, pndm.Timesteps.Length);
        Assert.Equal([981.0, 961, 961, 941], pndm.Timesteps.Take(4));
        Assert.Equal(1.0, pndm.Timesteps[^1]);
        var ddpm = new DdpmScheduler(sd);
        ddpm.SetTimesteps(50);
        Assert.Equal(ddim.Timesteps, ddpm.Timesteps);
        var euler = new EulerScheduler(sd);
        euler.SetTimesteps(50);
        Assert.Equal(999.0, euler.Timesteps[0]);
        Assert.Equal(978.612, euler.Timesteps[1], 3);
        Assert.Equal(0.0, euler.Timesteps[^1]);
        Assert.Equal(14.6146, euler.InitNoiseSigma, 3);
        Assert.Equal(0.0, euler.Sigmas[^1]);
        var lms = new LmsScheduler(sd);
        lms.SetTimesteps(50);
        Assert.Equal(euler.Sigmas, lms.Sigmas);
        var leadingEuler = new EulerScheduler(sd with { TimestepSpacing = "leading" });
        leadingEuler.SetTimesteps(50);
        Assert.Equal(981.0, leadingEuler.Timesteps[0]);
        Assert.Equal(13.12, leadingEuler.Sigmas[0], 2);
        Assert.Equal(Math.Sqrt(13.1214 * 13.1214 + 1), leadingEuler.InitNoiseSigma, 2);
        Assert.Equal([751.0, 501, 251, 1], Scheduler.Spacing("leading", 1000, 4, 1, true));
        Assert.Equal([999.0, 749, 499, 249], Scheduler.Spacing("trailing", 1000, 4, 0, true));
        var a = sd.AlphasCumprod();
        Assert.Equal(0.99915, a[0], 5);
        Assert.Equal(0.27633, a[500], 5);
        Assert.InRange(Math.Abs(a[981] - 0.0057755), 0, 5e-8);
        Assert.InRange(Math.Abs(a[999] - 0.0046601), 0, 5e-8);
        Assert.Equal(0.0292, Math.Sqrt((1 - a[0]) / a[0]), 4);
    }

    [Fact]
    public void SchedulerIdentitiesHold()
    {
        using var scope = NewDisposeScope();
        var sd = SchedulerConfig.StableDiffusion;
        var ddim = new DdimScheduler(sd);
        ddim.SetTimesteps(10);
        using var g = new Generator(5);
        var x0 = randn([2, 4, 8, 8], generator: g);
        var eps = randn([2, 4, 8, 8], generator: g);
        foreach (var t in new[] { 1, 250, 500, 981, 999 })
        {
            // The forward noising inverted by the x̂0 formula with the true ε returns x0.
            var xt = ddim.AddNoiseAt(x0, eps, t);
            var a = ddim.AlphasCumprod[t];
            var back = (xt - eps.Times(Math.Sqrt(1 - a))).Over(Math.Sqrt(a));
            Assert.True((back - x0).abs().max().item<float>() < 2e-4f * (t > 900 ? 10 : 1));
        }
        var xi = ddim.AddNoise(x0, eps, 3);
        var x0Pred = ddim.PredictX0(eps, 3, xi);
        Assert.True((x0Pred - x0).abs().max().item<float>() < 1e-4f);

        // DDIM with η = 0 is deterministic and follows x' = √ᾱ' x̂0 + √(1−ᾱ') ε.
        var s1 = ddim.Step(eps, 3, xi, new Generator(1)).Prev;
        var s2 = ddim.Step(eps, 3, xi, new Generator(2)).Prev;
        Assert.Equal(0f, (s1 - s2).abs().max().item<float>());
        var ap = ddim.PrevAlpha(3);
        var expected = x0Pred.Times(Math.Sqrt(ap)).Plus(eps.Times(Math.Sqrt(1 - ap)));
        Assert.True((s1 - expected).abs().max().item<float>() < 1e-5f);
        // The final step uses ᾱ_0 (set_alpha_to_one false), not 1.
        Assert.Equal(ddim.AlphasCumprod[0], ddim.PrevAlpha(9), 6);

        // The absolute-value variant at η = 0 equals plain DDIM; η > 1 is refused without it.
        var abs = new DdimScheduler(sd) { AbsoluteVariance = true, VarianceScale = 1.03 };
        abs.SetTimesteps(10);
        Assert.Equal(0f, (abs.Step(eps, 3, xi).Prev - s1).abs().max().item<float>());
        var hot = new DdimScheduler(sd) { Eta = 1.5 };
        hot.SetTimesteps(10);
        Assert.Throws<ArgumentOutOfRangeException>(() => hot.Step(eps, 3, xi));
        abs.Eta = 1.5;
        Assert.True(abs.Step(eps, 3, xi, new Generator(3)).Prev.isfinite().all().item<bool>());

        // Euler: x̂0 = x − σ ε and one step lands at x̂0 + σ' ε for a consistent ε.
        var euler = new EulerScheduler(sd);
        euler.SetTimesteps(10);
        var xe = euler.AddNoise(x0, eps, 2);
        var step = euler.Step(eps, 2, xe);
        Assert.True((step.X0 - x0).abs().max().item<float>() < 1e-4f);
        Assert.True((step.Prev - x0.Plus(eps.Times(euler.Sigmas[3]))).abs().max().item<float>() < 1e-4f);

        // LMS's Lagrange weights at order 1 integrate to σ' − σ (an Euler step), and the order-k weights sum to it too.
        var lms = new LmsScheduler(sd);
        lms.SetTimesteps(10);
        Assert.Equal(lms.Sigmas[1] - lms.Sigmas[0], lms.Coefficient(1, 0, 0), 9);
        Assert.Equal(lms.Sigmas[6] - lms.Sigmas[5], Enumerable.Range(0, 4).Sum(k => lms.Coefficient(4, 5, k)), 9);
    }

    /// <summary>
    /// Every sampler, run from noise with the exact denoiser of a finite set of images (the posterior mean of x0 given
    /// x_t, which the ε-MSE objective's minimiser is for that set), must land on a member of the set: the probability
    /// flow of a finite set ends at its points. This checks each sampler's whole trajectory, not one step, against a
    /// fact that does not depend on our code.
    /// </summary>
    [Theory]
    [InlineData("ddim", 50, 1e-5)]
    [InlineData("ddpm", 100, 1e-5)]
    [InlineData("pndm", 50, 1e-2)]
    [InlineData("euler", 50, 1e-5)]
    [InlineData("lms", 50, 1e-3)]
    public void SamplersWithTheExactDenoiserOfAFiniteSetLandOnAMember(string name, int steps, double tolerance)
    {
        using var scope = NewDisposeScope();
        var world = new Pipelines.Models.Diffusion.Toy.ToyWorld(16);
        var r = new Pipelines.Models.Common.SeededRandom(9);
        var set = world.Render(Enumerable.Range(0, 32).Select(_ => world.RandomItem(r)).ToArray(), r).to(ScalarType.Float64).view(32, -1);
        var scheduler = Scheduler.Create(name, Pipelines.Models.Diffusion.Toy.ToyDiffusionTrainer.Scheduler);
        scheduler.SetTimesteps(steps);
        using var g = new Generator(4);
        var x = randn([8, 3, 16, 16], generator: g).Times(scheduler.InitNoiseSigma);
        for (var i = 0; i < scheduler.Timesteps.Length; i++)
        {
            // The model sees the variance-preserving input √ᾱ·x0 + √(1−ᾱ)·ε; sigma schedulers scale x into it.
            var input = scheduler.ScaleModelInput(x, i).to(ScalarType.Float64).view(8, -1);
            var alphaBar = scheduler is SigmaScheduler sigma
                ? 1 / (1 + sigma.Sigmas[i] * sigma.Sigmas[i])
                : scheduler.AlphasCumprod[(int)Math.Round(scheduler.Timesteps[i])];
            var weights = cdist(input, set.Times(Math.Sqrt(alphaBar))).Squared().Over(-2 * (1 - alphaBar)).softmax(1);
            var x0 = matmul(weights, set);
            var eps = (input - x0.Times(Math.Sqrt(alphaBar))).Over(Math.Sqrt(1 - alphaBar)).view(x.shape).to(ScalarType.Float32);
            x = scheduler.Step(eps, i, x, g).Prev;
        }
        var distances = cdist(x.view(8, -1).to(ScalarType.Float64), set).min(1);
        var nearest = distances.values.max().item<double>();
        // Members lie several units apart; a sampler that stopped short or overshot lands between them.
        Assert.True(nearest < tolerance, $"{name}: the farthest sample is {nearest:E2} from the set (pixels: 768)");
        Assert.True(distances.indexes.data<long>().Distinct().Count() > 1, $"{name}: every sample landed on the same member");
    }

    [Fact]
    public void GuidanceAtOneIsTheConditionalPredictionAndHalvesCombineLinearly()
    {
        using var p = KnownConfigs.Tiny(3);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var cond = p.EncodePrompts(["a red circle"]);
        var uncond = p.EncodePrompts([""]);
        using var g = new Generator(1);
        var x = randn([1, 4, 8, 8], generator: g);
        var c = p.Unet.Forward(x, tensor(500), cond);
        var u = p.Unet.Forward(x, tensor(500), uncond);
        var guided1 = DiffusionPipeline.Guide(u, c, 1.0);
        Assert.True((guided1 - c).abs().max().item<float>() < 1e-6f);
        // The batched CFG call (uncond and cond rows in one forward) equals the two separate calls.
        var batched = p.PredictNoise(x, 500, uncond, cond, 7.5);
        Assert.True((batched - u.Plus((c - u).Times(7.5))).abs().max().item<float>() < 1e-4f);
        Assert.True((p.PredictNoise(x, 500, uncond, cond, 1.0) - c).abs().max().item<float>() < 1e-6f);
    }

    [Fact]
    public void RuntimeAgreesWithAnIndependentForwardFromTheSpec()
    {
        using var p = KnownConfigs.Tiny(11);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var weights = p.Unet.named_parameters().ToDictionary(x => x.name, x => (Tensor)x.parameter);
        var reference = new DiffusionReference(weights);
        using var g = new Generator(4);
        var ctx = randn([2, 77, 32], generator: g);
        foreach (var (h, w, t) in new[] { (16, 16, 981.0), (13, 11, 412.37) })
        {
            var x = randn([2, 4, h, w], generator: g);
            var expected = reference.Unet(x, t, ctx);
            var actual = p.Unet.Forward(x, tensor(t), ctx);
            Assert.Equal(expected.shape, actual.shape);
            var scale = expected.std().item<float>();
            Assert.True((actual - expected).abs().max().item<float>() < 1e-4f * scale, $"UNet at {h}×{w}, t = {t}");
        }
        var vae = new DiffusionReference(p.Vae!.named_parameters().ToDictionary(x => x.name, x => (Tensor)x.parameter));
        var z = randn([1, 4, 8, 8], generator: g);
        var image = vae.Decode(z);
        var decoded = p.Vae.Decode(z);
        Assert.Equal([1L, 3, 16, 16], decoded.shape);
        Assert.True((decoded - image).abs().max().item<float>() < 1e-4f * image.std().item<float>());
        var img = randn([1, 3, 16, 16], generator: g);
        var mean = vae.EncodeMean(img);
        Assert.True((p.Vae.EncodeMean(img) - mean).abs().max().item<float>() < 1e-4f * mean.std().item<float>());
        var text = new DiffusionReference(p.TextEncoder.named_parameters().ToDictionary(x => x.name, x => (Tensor)x.parameter));
        var ids = p.Tokenize(["a photo of a red circle", ""]);
        var states = text.Text(ids, 2, 4);
        var actualStates = p.TextEncoder.Encode(ids);
        Assert.Equal([2L, 77, 32], actualStates.shape);
        Assert.True((actualStates - states).abs().max().item<float>() < 1e-4f * states.std().item<float>());
    }

    [Fact]
    public void ClipTokenizerPadsTruncatesAndMergesWords()
    {
        var tok = ClipTokenizer.ForWords(KnownConfigs.TinyWords, 77);
        var empty = tok.Encode("");
        Assert.Equal(77, empty.Length);
        Assert.Equal(tok.BosId, empty[0]);
        Assert.All(empty.Skip(1), id => Assert.Equal(tok.EosId, id));
        var ids = tok.Encode("A  Photo of   a RED circle");
        Assert.Equal([tok.BosId, tok.Vocab["a</w>"], tok.Vocab["photo</w>"], tok.Vocab["of</w>"], tok.Vocab["a</w>"], tok.Vocab["red</w>"], tok.Vocab["circle</w>"], tok.EosId], ids.Take(8));
        Assert.Equal(8, tok.Length("a photo of a red circle"));
        // An unknown word falls back to byte symbols (one per character, the last with </w>).
        var unknown = tok.Pieces("zq");
        Assert.Equal([tok.Vocab["z"], tok.Vocab["q</w>"]], unknown);
        var longPrompt = tok.Encode(string.Join(' ', Enumerable.Repeat("red", 100)));
        Assert.Equal(77, longPrompt.Length);
        Assert.Equal(tok.EosId, longPrompt[76]);
        Assert.Equal(tok.Vocab["red</w>"], longPrompt[75]);
        Assert.Equal("a red circle", tok.Decode(tok.Encode("a red circle")));
    }

    [Fact]
    public void DenoisingSplitsAtAnyStepAndHooksSeeBlocks()
    {
        using var p = KnownConfigs.Tiny(5);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var cond = p.EncodePrompts(["a blue square"]);
        var uncond = p.EncodePrompts([""]);
        var s = new DdimScheduler(p.SchedulerConfig);
        s.SetTimesteps(6);
        var noise = p.InitialNoise(1, 7, 16, 16);
        var x0s = new List<Tensor>();
        var full = p.Denoise(s, noise, uncond, cond, 3.0, onStep: st => x0s.Add(st.X0.clone().MoveToOuterDisposeScope()));
        Assert.Equal(6, x0s.Count);
        var half = p.Denoise(s, noise, uncond, cond, 3.0, 0, 3);
        var rest = p.Denoise(s, half, uncond, cond, 3.0, 3);
        Assert.True((full - rest).abs().max().item<float>() < 1e-5f);
        // The last step's x̂0 is the step's own clean prediction: the final latent sits next to it.
        Assert.Equal(full.shape, x0s[^1].shape);

        // The attention-pattern hook switches to the explicit softmax without changing the result, and rows sum to 1.
        var path = p.Unet.Attentions().First(a => a.Path.EndsWith("attn2", StringComparison.Ordinal)).Path;
        var x = randn([1, 4, 16, 16]);
        var plain = p.Unet.Forward(x, tensor(300), cond);
        Tensor? pattern = null;
        using (p.Unet.Hooks.Add(path + ".hook_pattern", (t, _) => { pattern = t.detach().clone().MoveToOuterDisposeScope(); return null; }))
        {
            var hooked = p.Unet.Forward(x, tensor(300), cond);
            Assert.True((hooked - plain).abs().max().item<float>() < 1e-5f);
        }
        Assert.NotNull(pattern);
        Assert.Equal(77, pattern!.shape[3]);
        Assert.True(pattern.sum(-1).Minus(1).abs().max().item<float>() < 1e-5f);
        using (p.Unet.Hooks.Add("mid_block", (t, _) => zeros_like(t)))
        {
            Assert.True((p.Unet.Forward(x, tensor(300), cond) - plain).abs().max().item<float>() > 1e-4f);
        }
        Assert.Throws<ArgumentException>(() => p.Unet.Hooks.Add("no_such_block", (_, _) => null));
        var pndm = new PndmScheduler(p.SchedulerConfig);
        pndm.SetTimesteps(4);
        Assert.Throws<ArgumentException>(() => p.Denoise(pndm, noise, uncond, cond, 3.0, 2));
    }

    [Fact]
    public void LoraAtScaleZeroIsTheBaseAndMergingEqualsAttaching()
    {
        using var p = KnownConfigs.Tiny(6);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var cond = p.EncodePrompts(["a red cross"]);
        var x = randn([1, 4, 16, 16]);
        var baseEps = p.Unet.Forward(x, tensor(500), cond);
        using var lora = UNetLora.Create(p.Unet, "all", rank: 2, alpha: 1, seed: 3);
        Assert.Contains(lora.Paths, q => q.EndsWith("conv1", StringComparison.Ordinal));
        foreach (var up in lora.Trainable().Where(t => t.dim() >= 2 && t.shape[1] == 2))
        {
            up.normal_(0, 0.05);
        }
        using (lora.Attach())
        {
            lora.Multiplier = 0;
            Assert.Equal(0f, (p.Unet.Forward(x, tensor(500), cond) - baseEps).abs().max().item<float>());
            lora.Multiplier = 1.5;
            var adapted = p.Unet.Forward(x, tensor(500), cond);
            Assert.True((adapted - baseEps).abs().max().item<float>() > 1e-4f);
            var dir = Path.Combine(Path.GetTempPath(), "pl-lora-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(dir);
            lora.Save(Path.Combine(dir, "slider.safetensors"));
            lora.Detach();
            using var loaded = UNetLora.Load(p.Unet, Path.Combine(dir, "slider.safetensors"));
            loaded.Multiplier = 1.5;
            using (loaded.Attach())
            {
                Assert.True((p.Unet.Forward(x, tensor(500), cond) - adapted).abs().max().item<float>() < 1e-5f);
            }
            loaded.MergeInto();
            Assert.True((p.Unet.Forward(x, tensor(500), cond) - adapted).abs().max().item<float>() < 1e-4f);
            Directory.Delete(dir, true);
        }
        Assert.Equal(["attn2-kv"], new[] { UNetLora.Create(p.Unet, "attn2-kv").Target });
        Assert.All(UNetLora.Select(p.Unet, "attn2-kv"), s => Assert.Matches(@"attn2\.to_[kv]$", s.Path));
    }
}

/// <summary>
/// Gradients: the runtime trains (toy denoiser, distillation, sliders), so its backward is checked against central
/// finite differences on the toy UNet, and the conv workaround against an im2col reference (libtorch's CPU conv
/// backward returned wrong input gradients for stride-1 k×k convs whose output channels are not a multiple of 16).
/// </summary>
public sealed class DiffusionGradientTests
{
    static DiffusionGradientTests() => TorchRuntime.EnsureLoaded();

    [Theory]
    [InlineData(32, 3, 3)]
    [InlineData(32, 4, 3)]
    [InlineData(32, 20, 3)]
    [InlineData(32, 4, 5)]
    public void ConvInputGradientsEqualAnIm2colReference(int cin, int cout, int k)
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(3);
        var x = randn([8, cin, 16, 16], generator: g).requires_grad_(true);
        var w = randn([cout, cin, k, k], generator: g).mul(Scalars.Of(0.1)).requires_grad_(true);
        var go = randn([8, cout, 16, 16], generator: g);
        (DConv2d.Conv(x, w, null, 1, k / 2) * go).sum().backward();
        var ours = x.grad!.clone();
        x.grad!.zero_();
        var cols = nn.functional.unfold(x, k, 1, k / 2, 1);
        (matmul(w.view(cout, -1), cols).view(go.shape) * go).sum().backward();
        var reference = x.grad!;
        Assert.True((ours - reference).abs().max().item<float>() < 1e-5f * reference.abs().max().item<float>());
    }

    [Fact]
    public void ToyUNetGradientsAgreeWithFiniteDifferences()
    {
        var world = new Pipelines.Models.Diffusion.Toy.ToyWorld(16);
        using var pipe = Pipelines.Models.Diffusion.Toy.ToyDiffusionTrainer.Create(world, 0);
        using var scope = NewDisposeScope();
        var (images, prompts, _) = world.Batch(8, new Pipelines.Models.Common.SeededRandom(1));
        using var g = new Generator(5);
        var t = randint(0, 1000, [8], generator: g);
        var noise = randn(images.shape, generator: g);
        var xt = images.Times(0.6).Plus(noise.Times(0.8));
        Tensor ctx;
        using (no_grad())
        {
            ctx = pipe.EncodePrompts(prompts);
        }
        double Loss()
        {
            using var ng = no_grad();
            return nn.functional.mse_loss(pipe.Unet.Forward(xt, t, ctx), noise).to(ScalarType.Float64).item<double>();
        }
        foreach (var name in new[] { "conv_in.weight", "up_blocks.1.resnets.0.conv1.weight", "down_blocks.1.attentions.0.proj_in.weight", "time_embedding.linear_1.weight" })
        {
            var p = pipe.Unet.named_parameters().First(x => x.name == name).parameter;
            p.requires_grad = true;
            var d = randn(p.shape, generator: g);
            pipe.Unet.zero_grad();
            nn.functional.mse_loss(pipe.Unet.Forward(xt, t, ctx), noise).backward();
            var analytic = (p.grad! * d).sum().item<float>();
            const double eps = 1e-3;
            using (no_grad())
            {
                p.PlusInPlace(d.Times(eps));
            }
            var up = Loss();
            using (no_grad())
            {
                p.sub_(d.Times(2 * eps));
            }
            var down = Loss();
            using (no_grad())
            {
                p.PlusInPlace(d.Times(eps));
            }
            var numeric = (up - down) / (2 * eps);
            Assert.True(Math.Abs(analytic - numeric) < 0.02 * Math.Abs(numeric) + 1e-4, $"{name}: backward {analytic}, finite difference {numeric}");
        }
    }
}
