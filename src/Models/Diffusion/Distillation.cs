using System.Text.Json.Nodes;
using Pipelines.Models.Common;
using Pipelines.Models.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Diffusion;

/// <summary>Settings of the trajectory-regression distillation (research diffusion.md §4.4, option 1).</summary>
public sealed record DistillOptions
{
    /// <summary>The student's steps K (its timesteps: trailing, 999, 749, 499, 249 for K = 4).</summary>
    public int StudentSteps { get; init; } = 4;

    /// <summary>Teacher DDIM steps per student step.</summary>
    public int TeacherSubsteps { get; init; } = 12;

    /// <summary>The teacher's classifier-free guidance, baked into the student (sampled with none).</summary>
    public double TeacherGuidance { get; init; } = 3.0;
    public int TrajectoriesPerPrompt { get; init; } = 16;
    public int TrainSteps { get; init; } = 800;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 2e-4;
    public long Seed { get; init; }
}

/// <summary>
/// A K-step student of a text-to-image pipeline by trajectory regression (Luhman &amp; Luhman, with progressive
/// distillation's target, Salimans &amp; Ho Algorithm 2): the teacher's guided DDIM trajectories are recorded at the
/// student's timesteps τ; for step k the student's x̂0 at x_τk is regressed onto the x̃0 that makes one DDIM step land
/// on the teacher's x_τk+1, <c>x̃0 = (x_τk+1 − (σ_k+1/σ_k) x_τk) / (α_k+1 − (σ_k+1/σ_k) α_k)</c> (last step: the
/// teacher's final sample). The loss is the landing point's error, (α_k+1 − (σ_k+1/σ_k) α_k)²‖x̂0 − x̃0‖² (1 for the
/// last step): progressive distillation's max(1, SNR) weighting assumes an x- or v-predicting network, and with this
/// ε-predicting student it multiplied the first step's errors by 1/ᾱ (≈ 2·10⁴ at t = 999) and swamped the others.
/// The student starts from the teacher's weights (same keys, so the teacher's LoRA sliders load on it) and is saved
/// with a trailing K-step DDIM schedule.
/// </summary>
public static class Distillation
{
    /// <summary>The student's timesteps: trailing spacing (999, 749, 499, 249 for K = 4 of 1000).</summary>
    public static int[] StudentTimesteps(SchedulerConfig c, int k) => Scheduler.Spacing("trailing", c.NumTrainTimesteps, k, 0, true).Select(t => (int)t).ToArray();

    /// <summary>One deterministic DDIM move from ᾱ = a to ᾱ = ap given ε (x̂0 clipped when the scheduler clips).</summary>
    public static Tensor DdimMove(Tensor x, Tensor eps, double a, double ap, SchedulerConfig c)
    {
        var x0 = (x - eps.mul(Scalars.Of(Math.Sqrt(1 - a)))).mul(Scalars.Of(1 / Math.Sqrt(a)));
        if (c.ClipSample)
        {
            x0 = x0.clamp(Scalars.Of(-c.ClipSampleRange), Scalars.Of(c.ClipSampleRange));
            eps = (x - x0.mul(Scalars.Of(Math.Sqrt(a)))).mul(Scalars.Of(1 / Math.Sqrt(1 - a)));
        }
        return x0.mul(Scalars.Of(Math.Sqrt(ap))).Plus(eps.mul(Scalars.Of(Math.Sqrt(1 - ap))));
    }

    private static double Alpha(float[] ac, int t, SchedulerConfig c) => t >= 0 ? ac[t] : c.SetAlphaToOne ? 1.0 : ac[0];

    /// <summary>A copy of a pipeline (weights cloned), with another scheduler config and extra metadata.</summary>
    public static DiffusionPipeline Clone(DiffusionPipeline p, SchedulerConfig scheduler, JsonObject extra)
    {
        var unet = new UNet2DConditionModel(p.Unet.Config);
        var text = new ClipTextModel(p.TextEncoder.Config);
        AutoencoderKL? vae = p.Vae is null ? null : new AutoencoderKL(p.Vae.Config);
        using (no_grad())
        {
            foreach (var (src, dst) in new (nn.Module, nn.Module?)[] { (p.Unet, unet), (p.TextEncoder, text), (p.Vae!, vae) })
            {
                if (dst is null)
                {
                    continue;
                }
                var from = src.named_parameters().ToDictionary(x => x.name, x => x.parameter);
                foreach (var (name, param) in dst.named_parameters())
                {
                    param.copy_(from[name]);
                }
            }
        }
        var clone = new DiffusionPipeline(unet, vae, text, p.Tokenizer, scheduler) { Extra = extra };
        clone.SetEval();
        return clone;
    }

    /// <summary>Records teacher trajectories and trains the student; progress gets (phase, done, total, loss).</summary>
    public static (DiffusionPipeline Student, List<(int Step, double Loss)> Losses) Distill(DiffusionPipeline teacher, IReadOnlyList<string> prompts, DistillOptions o,
        Action<string, int, int, double>? progress = null, CancellationToken cancel = default)
    {
        var c = teacher.SchedulerConfig;
        var ac = c.AlphasCumprod();
        var taus = StudentTimesteps(c, o.StudentSteps);
        var k = taus.Length;
        var rows = prompts.SelectMany(p => Enumerable.Repeat(p, o.TrajectoriesPerPrompt)).ToList();
        var side = teacher.DefaultSize / teacher.DownFactor;
        // states[j][i]: trajectory j at τ_i (i < K), and the final sample at i = K.
        var states = new Tensor[k + 1];
        var contexts = new List<Tensor>();
        using (no_grad())
        {
            var chunks = rows.Chunk(64).ToList();
            var perChunk = new List<Tensor[]>();
            var done = 0;
            foreach (var chunk in chunks)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var cond = teacher.EncodePrompts(chunk);
                var uncond = teacher.EncodePrompts(Enumerable.Repeat("", chunk.Length));
                var x = teacher.InitialNoise(chunk.Length, o.Seed * 100_003 + done, side * teacher.DownFactor, side * teacher.DownFactor);
                var recorded = new Tensor[k + 1];
                for (var i = 0; i < k; i++)
                {
                    recorded[i] = x.clone();
                    int from = taus[i], to = i + 1 < k ? taus[i + 1] : -1;
                    for (var s = 0; s < o.TeacherSubsteps; s++)
                    {
                        var t = (int)Math.Round(from + (to - from) * (double)s / o.TeacherSubsteps);
                        var tn = s + 1 == o.TeacherSubsteps ? to : (int)Math.Round(from + (to - from) * (double)(s + 1) / o.TeacherSubsteps);
                        // One scope per teacher call: a forward's intermediates are freed here, not at the chunk's end.
                        using var step = NewDisposeScope();
                        var eps = teacher.PredictNoise(x, t, uncond, cond, o.TeacherGuidance);
                        x = DdimMove(x, eps, Alpha(ac, t, c), Alpha(ac, tn, c), c).MoveToOuterDisposeScope();
                    }
                }
                recorded[k] = x.clone();
                perChunk.Add(recorded.Select(r => r.MoveToOuterDisposeScope()).ToArray());
                contexts.Add(cond.MoveToOuterDisposeScope());
                done += chunk.Length;
                progress?.Invoke("teacher", done, rows.Count, 0);
            }
            for (var i = 0; i <= k; i++)
            {
                states[i] = cat(perChunk.Select(r => r[i]).ToList(), 0);
            }
            foreach (var r in perChunk.SelectMany(r => r))
            {
                r.Dispose();
            }
        }
        var context = cat(contexts, 0);
        foreach (var t in contexts)
        {
            t.Dispose();
        }

        var extra = JsonNode.Parse(teacher.Extra.ToJsonString())!.AsObject();
        var meta = extra["pipelines"] as JsonObject ?? new JsonObject();
        extra["pipelines"] = meta;
        meta["distilled"] = new JsonObject
        {
            ["method"] = "trajectory regression (Luhman & Luhman; progressive-distillation target)", ["steps"] = k, ["teacher_guidance"] = o.TeacherGuidance,
            ["teacher_substeps"] = o.TeacherSubsteps, ["timesteps"] = new JsonArray(taus.Select(t => (JsonNode?)t).ToArray()), ["sample_with_guidance"] = 0,
        };
        var student = Clone(teacher, c with { ClassName = "DDIMScheduler", TimestepSpacing = "trailing" }, extra);
        var parameters = student.Unet.parameters().ToList();
        foreach (var p in student.TextEncoder.parameters())
        {
            p.requires_grad = false;
        }
        using var optimizer = new StableAdamW(parameters, o.LearningRate, weightDecay: 0);
        student.Unet.train();
        var r0 = new SeededRandom(o.Seed + 5);
        var losses = new List<(int, double)>();
        var ema = double.NaN;
        var n = rows.Count;
        for (var step = 0; step < o.TrainSteps; step++)
        {
            cancel.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var js = Enumerable.Range(0, o.BatchSize).Select(_ => r0.Next(n)).ToArray();
            var ks = Enumerable.Range(0, o.BatchSize).Select(_ => r0.Next(k)).ToArray();
            var idx = tensor(js.Select(j => (long)j).ToArray());
            var xs = new List<Tensor>();
            var targets = new List<Tensor>();
            var weights = new float[o.BatchSize];
            var alphas = new float[o.BatchSize];
            var sigmas = new float[o.BatchSize];
            for (var b = 0; b < o.BatchSize; b++)
            {
                int j = js[b], i = ks[b];
                var xk = states[i][j];
                double a = ac[taus[i]], al = Math.Sqrt(a), sg = Math.Sqrt(1 - a);
                Tensor target;
                if (i + 1 < k)
                {
                    double an = ac[taus[i + 1]], aln = Math.Sqrt(an), sgn = Math.Sqrt(1 - an), ratio = sgn / sg;
                    target = (states[i + 1][j] - xk.mul(Scalars.Of(ratio))).mul(Scalars.Of(1 / (aln - ratio * al)));
                    weights[b] = (float)Math.Pow(aln - ratio * al, 2);
                }
                else
                {
                    target = states[k][j];
                    weights[b] = 1f;
                }
                xs.Add(xk);
                targets.Add(target);
                alphas[b] = (float)al;
                sigmas[b] = (float)sg;
            }
            var x = stack(xs, 0);
            var t = tensor(ks.Select(i => (long)taus[i]).ToArray());
            var eps = student.Unet.Forward(x, t, context.index_select(0, idx));
            var x0 = (x - eps * tensor(sigmas).view(-1, 1, 1, 1)) / tensor(alphas).view(-1, 1, 1, 1);
            var perRow = (x0 - stack(targets, 0)).Squared().mean([1L, 2L, 3L]);
            var loss = (perRow * tensor(weights)).mean();
            optimizer.zero_grad();
            loss.backward();
            nn.utils.clip_grad_norm_(parameters, 1.0);
            optimizer.step();
            var value = loss.item<float>();
            ema = double.IsNaN(ema) ? value : 0.95 * ema + 0.05 * value;
            if (step % 50 == 0 || step == o.TrainSteps - 1)
            {
                losses.Add((step + 1, ema));
                progress?.Invoke("student", step + 1, o.TrainSteps, ema);
            }
        }
        foreach (var s in states)
        {
            s.Dispose();
        }
        context.Dispose();
        student.SetEval();
        foreach (var p in parameters)
        {
            p.requires_grad = false;
        }
        return (student, losses);
    }
}

/// <summary>Which sampler produced a set of images, and its cost in UNet evaluations per image.</summary>
public sealed record SamplerPlan(string Name, int UnetCalls, string Description);

/// <summary>
/// Diversity distillation's hybrid inference (research diffusion.md §4.2): the base model (DDIM, guidance w) runs from
/// noise until the timestep nearest the distilled schedule's hand-off timestep τ_h, the student finishes from τ_h
/// without guidance; <c>reverse</c> is the control (the student first, the base after). At least one base step runs.
/// </summary>
public static class HybridSampler
{
    public static (Tensor Images, SamplerPlan Plan) Sample(DiffusionPipeline baseModel, DiffusionPipeline student, IReadOnlyList<string> prompts, long seed,
        int baseSteps, double baseGuidance, int studentSteps, int handoff = 1, bool reverse = false, CancellationToken cancel = default, Tensor? initialNoise = null)
    {
        var bs = new DdimScheduler(baseModel.SchedulerConfig with { TimestepSpacing = baseModel.SchedulerConfig.TimestepSpacing ?? "leading" });
        bs.SetTimesteps(baseSteps);
        var ss = new DdimScheduler(student.SchedulerConfig);
        ss.SetTimesteps(studentSteps);
        if (handoff < 1 || handoff >= studentSteps)
        {
            throw new ArgumentOutOfRangeException(nameof(handoff), $"the hand-off index must be in [1, {studentSteps - 1}]");
        }
        var tStar = ss.Timesteps[handoff];
        var k = Enumerable.Range(0, bs.Timesteps.Length).MinBy(i => Math.Abs(bs.Timesteps[i] - tStar));
        if (k < 1)
        {
            throw new ArgumentException($"no base step runs before the hand-off at t = {tStar} with {baseSteps} base steps; use more base steps");
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var side = baseModel.DefaultSize;
        var noise = initialNoise ?? baseModel.InitialNoise(prompts.Count, seed, side, side);
        var condB = baseModel.EncodePrompts(prompts);
        var uncondB = baseGuidance > 1 ? baseModel.EncodePrompts(Enumerable.Repeat("", prompts.Count)) : null;
        var condS = student.EncodePrompts(prompts);
        Tensor final;
        SamplerPlan plan;
        var cfg = baseGuidance > 1 ? 2 : 1;
        if (!reverse)
        {
            var mid = baseModel.Denoise(bs, noise, uncondB, condB, baseGuidance, 0, k, cancel: cancel);
            final = student.Denoise(ss, mid, null, condS, 0, handoff, cancel: cancel);
            plan = new SamplerPlan("hybrid", k * cfg + studentSteps - handoff, $"base {k} DDIM step(s) of {baseSteps} (t {bs.Timesteps[0]:F0}→{bs.Timesteps[k]:F0}, w {baseGuidance}), student from t {tStar:F0}");
        }
        else
        {
            var mid = student.Denoise(ss, noise, null, condS, 0, 0, handoff, cancel: cancel);
            final = baseModel.Denoise(bs, mid, uncondB, condB, baseGuidance, k, cancel: cancel);
            plan = new SamplerPlan("reverse", handoff + (baseSteps - k) * cfg, $"student {handoff} step(s) to t {tStar:F0}, base from step {k} of {baseSteps} (w {baseGuidance})");
        }
        return (baseModel.Decode(final).MoveToOuterDisposeScope(), plan);
    }
}
