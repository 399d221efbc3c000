using Pipelines.Models.Diffusion.Toy;
using Pipelines.Models.Runtime;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Diffusion;

/// <summary>Concept Sliders' settings (research diffusion.md §3.4; toy-scale defaults).</summary>
public sealed record SliderOptions
{
    public string Target { get; init; } = "attn1";
    public int Rank { get; init; } = 4;
    public double Alpha { get; init; } = 1.0;
    /// <summary>η: the strength of the positive − negative direction in the target.</summary>
    public double Eta { get; init; } = 4.0;
    public int Iterations { get; init; } = 300;
    public double LearningRate { get; init; } = 2e-3;
    public int BatchSize { get; init; } = 4;
    /// <summary>DDIM steps of the schedule the training latents come from.</summary>
    public int Steps { get; init; } = 25;
    public double Guidance { get; init; } = 3.0;
    public long Seed { get; init; }
}

/// <summary>SliderSpace's settings (research diffusion.md §5, toy substitutes in §5's last paragraph).</summary>
public sealed record SliderSpaceOptions
{
    public int Samples { get; init; } = 256;
    public int Sliders { get; init; } = 4;
    public int Iterations { get; init; } = 300;
    public double LearningRate { get; init; } = 2e-3;
    /// <summary>Sliders trained per iteration (the code's 3).</summary>
    public int PerIteration { get; init; } = 3;
    public int SampleSteps { get; init; } = 20;
    public double Guidance { get; init; } = 3.0;
    /// <summary>Timesteps of the one-step x̂0 preview (a 4-step trailing schedule).</summary>
    public int PreviewSteps { get; init; } = 4;
    public long Seed { get; init; }
}

/// <summary>What SliderSpace found: the principal components, their share of variance, and each slider's measured direction.</summary>
public sealed record SliderSpaceResult(IReadOnlyList<UNetLora> Sliders, Tensor Components, double[] Explained, List<(int Step, double Loss)> Losses);

/// <summary>
/// Concept Sliders (a LoRA trained so that ε_{θ+LoRA}(x_t, c_t) = ε(x_t, neutral) + η(ε(x_t, c₊) − ε(x_t, c₋))) and
/// SliderSpace (PCA over the model's own samples in a frozen feature space, one rank-1 slider per component trained to
/// move the features along it).
/// </summary>
public static class Sliders
{
    /// <summary>Trains a slider from a prompt pair; the returned adapter is detached, multiplier 1.</summary>
    public static (UNetLora Slider, List<(int Step, double Loss)> Losses) Train(DiffusionPipeline pipe, string target, string positive, string negative, string neutral, SliderOptions o,
        Action<int, double>? progress = null, CancellationToken cancel = default)
    {
        foreach (var p in pipe.Unet.parameters().Concat(pipe.TextEncoder.parameters()))
        {
            p.requires_grad = false;
        }
        var slider = UNetLora.Create(pipe.Unet, o.Target, o.Rank, o.Alpha, o.Seed);
        using var attached = slider.Attach();
        using var optimizer = new StableAdamW(slider.Trainable(), o.LearningRate, weightDecay: 0);
        var scheduler = (DdimScheduler)Scheduler.Create("ddim", pipe.SchedulerConfig);
        scheduler.SetTimesteps(o.Steps);
        Tensor ct, cp, cn, cu, cneutral;
        using (no_grad())
        {
            ct = pipe.EncodePrompts([target]).DetachFromDisposeScope();
            cp = pipe.EncodePrompts([positive]).DetachFromDisposeScope();
            cn = pipe.EncodePrompts([negative]).DetachFromDisposeScope();
            cneutral = pipe.EncodePrompts([neutral]).DetachFromDisposeScope();
            cu = pipe.EncodePrompts([""]).DetachFromDisposeScope();
        }
        var r = new Random((int)(o.Seed & 0x7FFFFFFF) + 5);
        var losses = new List<(int, double)>();
        var n = o.BatchSize;
        try
        {
            for (var it = 0; it < o.Iterations; it++)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var k = 1 + r.Next(o.Steps - 1);
                Tensor x;
                using (no_grad())
                {
                    slider.Multiplier = 1;
                    x = pipe.InitialNoise(n, o.Seed * 100_003 + it * 17L, pipe.DefaultSize, pipe.DefaultSize).mul(Scalars.Of(scheduler.InitNoiseSigma));
                    x = pipe.Denoise(scheduler, x, cu.expand(n, -1, -1), ct.expand(n, -1, -1), o.Guidance, 0, k);
                }
                var t = tensor(scheduler.Timesteps[k], ScalarType.Float32);
                Tensor goal;
                using (no_grad())
                {
                    slider.Multiplier = 0;
                    var e = pipe.Unet.Forward(cat([x, x, x], 0), t, cat([cneutral.expand(n, -1, -1), cp.expand(n, -1, -1), cn.expand(n, -1, -1)], 0)).chunk(3, 0);
                    goal = e[0].Plus((e[1] - e[2]).mul(Scalars.Of(o.Eta)));
                }
                slider.Multiplier = 1;
                var loss = F.mse_loss(pipe.Unet.Forward(x, t, ct.expand(n, -1, -1)), goal);
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                var value = loss.item<float>();
                if (it % 10 == 0 || it == o.Iterations - 1)
                {
                    losses.Add((it + 1, value));
                    progress?.Invoke(it + 1, value);
                }
            }
        }
        finally
        {
            foreach (var c in new[] { ct, cp, cn, cu, cneutral })
            {
                c.Dispose();
            }
            slider.Multiplier = 1;
        }
        foreach (var p in slider.parameters())
        {
            p.requires_grad = false;
        }
        return (slider, losses);
    }

    /// <summary>L2-normalised scorer features [B, 64] of images in [−1, 1].</summary>
    public static Tensor Features(ToyScorer scorer, Tensor images) => F.normalize(scorer.Forward(images.clamp(Scalars.Of(-1.0), Scalars.Of(1.0))).Features, p: 2, dim: 1);

    /// <summary>Mean-centred PCA: the top components [k, D] (unit rows, sign fixed so the largest loading is positive) and their share of variance.</summary>
    public static (Tensor Components, double[] Explained) Pca(Tensor x, int k)
    {
        using var scope = NewDisposeScope();
        var centred = (x - x.mean([0L], keepdim: true)).to(ScalarType.Float64);
        var (_, s, vh) = linalg.svd(centred, fullMatrices: false);
        var total = s.Squared().sum().item<double>();
        var comps = vh.narrow(0, 0, k);
        var sign = comps.gather(1, comps.abs().argmax(1, keepdim: true)).sign();
        comps = (comps * sign).to(ScalarType.Float32);
        var explained = s.narrow(0, 0, k).Squared().data<double>().Select(v => total > 0 ? v / total : 0).ToArray();
        return (comps.MoveToOuterDisposeScope(), explained);
    }

    /// <summary>
    /// SliderSpace on the toy: sample <c>Samples</c> images of the prompt, PCA over their normalised scorer features,
    /// then rank-1 attn2 k/v sliders (frozen orthonormal up) trained together: each iteration noises one sample to one
    /// of the preview timesteps, previews x̂0 with no slider and with each of <c>PerIteration</c> random sliders, and
    /// minimises −cos(Δf, PC_s).
    /// </summary>
    public static SliderSpaceResult Discover(DiffusionPipeline pipe, ToyScorer scorer, string prompt, SliderSpaceOptions o,
        Action<string, double>? progress = null, CancellationToken cancel = default)
    {
        foreach (var p in pipe.Unet.parameters().Concat(pipe.TextEncoder.parameters()).Concat(scorer.parameters()))
        {
            p.requires_grad = false;
        }
        Tensor images;
        using (no_grad())
        {
            progress?.Invoke($"sampling {o.Samples} images", 0);
            var list = new List<Tensor>();
            for (var start = 0; start < o.Samples; start += 64)
            {
                var n = Math.Min(64, o.Samples - start);
                list.Add(pipe.Sample(new SampleRequest { Prompts = Enumerable.Repeat(prompt, n).ToList(), Seed = o.Seed * 10_007 + start, Steps = o.SampleSteps, Guidance = o.Guidance, Scheduler = "ddim" }));
            }
            images = cat(list, 0).DetachFromDisposeScope();
            list.ForEach(t => t.Dispose());
        }
        Tensor components;
        double[] explained;
        using (no_grad())
        {
            using var features = Features(scorer, images);
            (components, explained) = Pca(features, o.Sliders);
        }
        var sliders = Enumerable.Range(0, o.Sliders).Select(i => UNetLora.Create(pipe.Unet, "attn2-kv", 1, 1.0, o.Seed * 31 + i, frozenOrthogonalUp: true)).ToList();
        var attached = sliders.Select(s => s.Attach()).ToList();
        sliders.ForEach(s => s.Multiplier = 0);
        using var optimizer = new StableAdamW(sliders.SelectMany(s => s.Trainable()), o.LearningRate, weightDecay: 0);
        var timesteps = Distillation.StudentTimesteps(pipe.SchedulerConfig, o.PreviewSteps);
        var ac = pipe.SchedulerConfig.AlphasCumprod();
        Tensor ctx;
        using (no_grad())
        {
            ctx = pipe.EncodePrompts([prompt]).DetachFromDisposeScope();
        }
        var r = new Random((int)(o.Seed & 0x7FFFFFFF) + 11);
        var losses = new List<(int, double)>();
        var window = 0.0;
        var windowCount = 0;
        try
        {
            for (var it = 0; it < o.Iterations; it++)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var x0 = pipe.EncodeImage(images.narrow(0, it % o.Samples, 1));
                var t = timesteps[r.Next(timesteps.Length)];
                using var g = new Generator((ulong)(o.Seed * 7_919 + it));
                var a = ac[t];
                var xt = x0.Times(Math.Sqrt(a)).Plus(randn(x0.shape, generator: g).Times(Math.Sqrt(1 - a)));
                var tt = tensor((float)t);
                Tensor Preview(Tensor eps) => pipe.Decode((xt - eps.Times(Math.Sqrt(1 - a))).Over(Math.Sqrt(a)));
                Tensor f0;
                using (no_grad())
                {
                    f0 = Features(scorer, Preview(pipe.Unet.Forward(xt, tt, ctx)));
                }
                optimizer.zero_grad();
                var total = 0.0;
                foreach (var s in Enumerable.Range(0, o.Sliders).OrderBy(_ => r.Next()).Take(Math.Min(o.PerIteration, o.Sliders)))
                {
                    sliders[s].Multiplier = 1;
                    var fs = Features(scorer, Preview(pipe.Unet.Forward(xt, tt, ctx)));
                    sliders[s].Multiplier = 0;
                    var delta = F.normalize(fs - f0, p: 2, dim: 1, eps: 1e-8);
                    var loss = -F.cosine_similarity(delta, components[s].unsqueeze(0), dim: 1).mean();
                    loss.backward();
                    total += loss.item<float>();
                }
                optimizer.step();
                window += total / Math.Min(o.PerIteration, o.Sliders);
                windowCount++;
                if ((it + 1) % 10 == 0 || it == o.Iterations - 1)
                {
                    // The mean over the last (up to) 10 iterations: one iteration's −cos depends on its random image and timestep.
                    losses.Add((it + 1, window / windowCount));
                    progress?.Invoke($"iteration {it + 1}, −cos {window / windowCount:F3}", (it + 1.0) / o.Iterations);
                    window = 0;
                    windowCount = 0;
                }
            }
        }
        finally
        {
            attached.ForEach(d => d.Dispose());
            ctx.Dispose();
            images.Dispose();
        }
        foreach (var s in sliders)
        {
            s.Multiplier = 1;
            foreach (var p in s.parameters())
            {
                p.requires_grad = false;
            }
        }
        return new SliderSpaceResult(sliders, components, explained, losses);
    }
}
