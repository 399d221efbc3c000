using Pipelines.Models.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Diffusion;

/// <summary>Settings of ESD (research diffusion.md §3.1, the paper form): a fine-tuned copy θ* learns ε_∅ − η(ε_c − ε_∅).</summary>
public sealed record EsdOptions
{
    /// <summary>esd-x (every cross-attention weight), esd-u (everything else but the time embedding and the output layers), esd-x-strict (attn2 k and v).</summary>
    public string Parameters { get; init; } = "esd-x";
    public double Eta { get; init; } = 1.0;
    public int Iterations { get; init; } = 150;
    public double LearningRate { get; init; } = 1e-3;
    public int BatchSize { get; init; } = 8;
    /// <summary>DDIM steps of the schedule k is drawn from (the latent is denoised for k of them).</summary>
    public int Steps { get; init; } = 25;
    /// <summary>Guidance of the sampler that makes the training latents.</summary>
    public double StartGuidance { get; init; } = 3.0;
    /// <summary>Sample the training latents with the frozen model (the current code) rather than θ* (the paper).</summary>
    public bool FrozenSampler { get; init; }
    public long Seed { get; init; }
}

/// <summary>Settings of gradient ascent (research diffusion.md §3.3): −‖ε − ε_θ(x_t, t, c)‖² on the concept's images, clipped.</summary>
public sealed record GradientAscentOptions
{
    public int Iterations { get; init; } = 40;
    public double LearningRate { get; init; } = 1e-4;
    public int BatchSize { get; init; } = 8;
    /// <summary>Weight of the ordinary loss on other images (0: pure ascent).</summary>
    public double RetainWeight { get; init; } = 1.0;
    public double ClipNorm { get; init; } = 1.0;
    public long Seed { get; init; }
}

/// <summary>UCE's settings (research diffusion.md §3.2): current code by default; <see cref="TokenRule"/> "through-end" is the paper-era rule.</summary>
public sealed record UceOptions
{
    public double EraseScale { get; init; } = 1.0;
    /// <summary>Null: 1 under the current rule, max(0.1, 1/#preserve) under the paper-era rule.</summary>
    public double? PreserveScale { get; init; }
    public double Lambda { get; init; } = 0.5;
    /// <summary>"last" (the last word token, the current code) or "through-end" (every position from the last word token on).</summary>
    public string TokenRule { get; init; } = "last";
}

/// <summary>What UCE changed: the rule, the edited matrices and the residuals on the erase and preserve vectors.</summary>
public sealed record UceReport(string TokenRule, int Matrices, int EraseVectors, int PreserveVectors, double EraseResidualBefore, double EraseResidualAfter, double PreserveDrift);

/// <summary>
/// Concept erasure for UNet2DConditionModel pipelines: ESD-x / ESD-u (fine-tuning toward negatively guided noise), UCE
/// (the closed-form cross-attention edit with preserved concepts) and gradient ascent. They edit the pipeline they are
/// given in place; callers clone the base first.
/// </summary>
public static class ConceptErasure
{
    public static readonly string[] EsdParameterSets = ["esd-x", "esd-u", "esd-x-strict", "esd-all"];

    /// <summary>The UNet parameters a method trains (paper-era sets: ESD-u leaves attn2, the time embedding and conv_norm_out/conv_out).</summary>
    public static IReadOnlyList<(string Name, Parameter Parameter)> Select(UNet2DConditionModel unet, string set)
    {
        bool Attn2(string n) => n.Contains(".attn2.", StringComparison.Ordinal);
        Func<string, bool> keep = set switch
        {
            "esd-x" => Attn2,
            "esd-x-strict" => n => Attn2(n) && (n.Contains(".attn2.to_k.", StringComparison.Ordinal) || n.Contains(".attn2.to_v.", StringComparison.Ordinal)),
            "esd-u" => n => !Attn2(n) && !n.StartsWith("time_embedding.", StringComparison.Ordinal) && !n.StartsWith("conv_out.", StringComparison.Ordinal) && !n.StartsWith("conv_norm_out.", StringComparison.Ordinal),
            "esd-all" => _ => true,
            _ => throw new ArgumentException($"unknown ESD parameter set \"{set}\" (expected one of {string.Join(", ", EsdParameterSets)})"),
        };
        return unet.named_parameters().Where(p => keep(p.name)).Select(p => (p.name, p.parameter)).ToList();
    }

    /// <summary>
    /// ESD: for each iteration draw k ~ U{0..K−1}, denoise fresh noise for k DDIM steps (η 0, guidance StartGuidance,
    /// the concept's prompt) with θ* (or the frozen model), then at that latent's timestep regress θ*'s conditional ε
    /// onto ε_∅ − η(ε_c − ε_∅) of the frozen model. <paramref name="onCheckpoint"/> gets every iteration's number and
    /// decides itself when to save.
    /// </summary>
    public static List<(int Step, double Loss)> Esd(DiffusionPipeline erased, DiffusionPipeline frozen, IReadOnlyList<string> prompts, EsdOptions o,
        Action<int, double>? progress = null, Action<int>? onCheckpoint = null, CancellationToken cancel = default)
    {
        if (prompts.Count == 0)
        {
            throw new ArgumentException("ESD needs at least one prompt of the concept");
        }
        var trained = Select(erased.Unet, o.Parameters);
        foreach (var p in erased.Unet.parameters())
        {
            p.requires_grad = false;
        }
        foreach (var (_, p) in trained)
        {
            p.requires_grad = true;
        }
        using var optimizer = new StableAdamW(trained.Select(p => p.Parameter), o.LearningRate, weightDecay: 0);
        var scheduler = (DdimScheduler)Scheduler.Create("ddim", erased.SchedulerConfig);
        scheduler.SetTimesteps(o.Steps);
        var r = new Random((int)(o.Seed & 0x7FFFFFFF));
        var losses = new List<(int, double)>();
        int h = erased.DefaultSize, w = erased.DefaultSize;
        Tensor cond, uncond;
        using (no_grad())
        {
            cond = frozen.EncodePrompts(prompts).DetachFromDisposeScope();
            uncond = frozen.EncodePrompts([""]).DetachFromDisposeScope();
        }
        try
        {
            for (var it = 0; it < o.Iterations; it++)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var rows = Enumerable.Range(0, o.BatchSize).Select(_ => (long)r.Next(prompts.Count)).ToArray();
                var c = cond.index_select(0, tensor(rows));
                var u = uncond.expand(o.BatchSize, -1, -1);
                var k = r.Next(o.Steps);
                Tensor x;
                using (no_grad())
                {
                    var sampler = o.FrozenSampler ? frozen : erased;
                    x = sampler.InitialNoise(o.BatchSize, o.Seed * 1_000_003 + it * 131L, h, w).mul(Scalars.Of(scheduler.InitNoiseSigma));
                    x = sampler.Denoise(scheduler, x, u, c, o.StartGuidance, 0, k);
                }
                var t = scheduler.Timesteps[k];
                Tensor target;
                using (no_grad())
                {
                    var both = frozen.Unet.Forward(cat([x, x], 0), tensor(t, ScalarType.Float32), cat([u, c], 0)).chunk(2, 0);
                    target = both[0] - (both[1] - both[0]).mul(Scalars.Of(o.Eta));
                }
                var loss = F.mse_loss(erased.Unet.Forward(x, tensor(t, ScalarType.Float32), c), target);
                optimizer.zero_grad();
                loss.backward();
                optimizer.step();
                var value = loss.item<float>();
                if (it % 10 == 0 || it == o.Iterations - 1)
                {
                    losses.Add((it + 1, value));
                    progress?.Invoke(it + 1, value);
                }
                onCheckpoint?.Invoke(it + 1);
            }
        }
        finally
        {
            cond.Dispose();
            uncond.Dispose();
            foreach (var p in erased.Unet.parameters())
            {
                p.requires_grad = false;
            }
        }
        return losses;
    }

    /// <summary>
    /// Gradient ascent: the ordinary training loss on the concept's images, negated, plus (RetainWeight) the ordinary
    /// loss on other images; every UNet weight trains, gradients clipped to ClipNorm.
    /// </summary>
    public static List<(int Step, double Loss)> GradientAscent(DiffusionPipeline erased, Tensor conceptImages, IReadOnlyList<string> conceptPrompts,
        Tensor? retainImages, IReadOnlyList<string>? retainPrompts, GradientAscentOptions o, Action<int, double>? progress = null, Action<int>? onCheckpoint = null,
        CancellationToken cancel = default)
    {
        var parameters = erased.Unet.parameters().ToList();
        foreach (var p in parameters)
        {
            p.requires_grad = true;
        }
        using var optimizer = new StableAdamW(parameters, o.LearningRate, weightDecay: 0);
        var alphas = tensor(erased.SchedulerConfig.AlphasCumprod());
        var r = new Random((int)(o.Seed & 0x7FFFFFFF));
        var losses = new List<(int, double)>();
        Tensor Loss(Tensor images, IReadOnlyList<string> prompts, int it, int salt)
        {
            var rows = Enumerable.Range(0, o.BatchSize).Select(_ => (long)r.Next((int)images.shape[0])).ToArray();
            var x0 = erased.EncodeImage(images.index_select(0, tensor(rows)));
            using var g = new Generator((ulong)(o.Seed * 7919 + it * 2 + salt));
            var t = randint(0, erased.SchedulerConfig.NumTrainTimesteps, [o.BatchSize], generator: g);
            var noise = randn(x0.shape, generator: g);
            var a = alphas.index_select(0, t).view(-1, 1, 1, 1);
            var xt = (a.sqrt() * x0).Plus(a.OneMinus().sqrt() * noise);
            Tensor ctx;
            using (no_grad())
            {
                ctx = erased.EncodePrompts(rows.Select(i => prompts[(int)i]));
            }
            return F.mse_loss(erased.Unet.Forward(xt, t, ctx), noise);
        }
        try
        {
            for (var it = 0; it < o.Iterations; it++)
            {
                cancel.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var loss = Loss(conceptImages, conceptPrompts, it, 0).neg();
                if (retainImages is not null && retainPrompts is not null && o.RetainWeight > 0)
                {
                    loss = loss.Plus(Loss(retainImages, retainPrompts, it, 1).mul(Scalars.Of(o.RetainWeight)));
                }
                optimizer.zero_grad();
                loss.backward();
                nn.utils.clip_grad_norm_(parameters, o.ClipNorm);
                optimizer.step();
                var value = loss.item<float>();
                if (it % 5 == 0 || it == o.Iterations - 1)
                {
                    losses.Add((it + 1, value));
                    progress?.Invoke(it + 1, value);
                }
                onCheckpoint?.Invoke(it + 1);
            }
        }
        finally
        {
            alphas.Dispose();
            foreach (var p in parameters)
            {
                p.requires_grad = false;
            }
        }
        return losses;
    }

    /// <summary>
    /// The context vectors UCE edits with: each prompt's text-encoder states at its last word token ("last") or at
    /// every position from it to the end ("through-end"), as rows [n, D].
    /// </summary>
    public static Tensor ContextVectors(DiffusionPipeline pipe, IReadOnlyList<string> prompts, string rule)
    {
        using var noGrad = no_grad();
        var states = pipe.EncodePrompts(prompts);
        var rows = new List<Tensor>();
        for (var i = 0; i < prompts.Count; i++)
        {
            var last = Math.Max(0, pipe.Tokenizer.Length(prompts[i]) - 2);
            rows.Add(rule switch
            {
                "last" => states[i, last].unsqueeze(0),
                "through-end" => states[i].narrow(0, last, states.shape[1] - last),
                _ => throw new ArgumentException($"unknown UCE token rule \"{rule}\" (expected last or through-end)"),
            });
        }
        return cat(rows, 0);
    }

    /// <summary>
    /// UCE's closed form for one matrix W [out, D]: argmin Σ s_e‖W c_i − v*_i‖² + Σ s_p‖W c_j − W_old c_j‖² + λ‖W − W_old‖²_F,
    /// = (λW + s_e Σ v*_i c_iᵀ + s_p Σ (W c_j) c_jᵀ)(λI + s_e Σ c_i c_iᵀ + s_p Σ c_j c_jᵀ)⁻¹, solved in float64.
    /// </summary>
    public static Tensor UceSolve(Tensor w, Tensor erase, Tensor targets, Tensor preserve, double eraseScale, double preserveScale, double lambda)
    {
        using var scope = NewDisposeScope();
        var W = w.to(ScalarType.Float64);
        var ce = erase.to(ScalarType.Float64);
        var cp = preserve.to(ScalarType.Float64);
        var v = targets.to(ScalarType.Float64);
        var d = W.shape[1];
        var lhs = W.mul(Scalars.Of(lambda)).Plus(matmul(v.t(), ce).mul(Scalars.Of(eraseScale))).Plus(matmul(matmul(W, cp.t()), cp).mul(Scalars.Of(preserveScale)));
        var gram = eye(d, dtype: ScalarType.Float64).mul(Scalars.Of(lambda)).Plus(matmul(ce.t(), ce).mul(Scalars.Of(eraseScale))).Plus(matmul(cp.t(), cp).mul(Scalars.Of(preserveScale)));
        // lhs · gram⁻¹ = solve(gramᵀ, lhsᵀ)ᵀ; gram is symmetric positive definite.
        var solved = linalg.solve(gram, lhs.t()).t();
        return solved.to(w.dtype).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// UCE on every attn2.to_k and attn2.to_v: the erase prompts' vectors are mapped to what the guide prompts' vectors
    /// (same rule, same positions) produced before, the preserve prompts' vectors keep their outputs.
    /// </summary>
    public static UceReport Uce(DiffusionPipeline pipe, IReadOnlyList<string> erase, IReadOnlyList<string> guides, IReadOnlyList<string> preserve, UceOptions o)
    {
        if (erase.Count == 0 || guides.Count != erase.Count)
        {
            throw new ArgumentException($"UCE needs one guide per erased prompt ({erase.Count} erased, {guides.Count} guides)");
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ce = ContextVectors(pipe, erase, o.TokenRule);
        // The guide's vectors at the erased prompts' positions: the same rule applied to the guide, aligned row by row.
        var guideStates = pipe.EncodePrompts(guides);
        var guideRows = new List<Tensor>();
        for (var i = 0; i < erase.Count; i++)
        {
            var last = Math.Max(0, pipe.Tokenizer.Length(erase[i]) - 2);
            var guideLast = Math.Max(0, pipe.Tokenizer.Length(guides[i]) - 2);
            guideRows.Add(o.TokenRule == "last"
                ? guideStates[i, guideLast].unsqueeze(0)
                : guideStates[i].narrow(0, last, guideStates.shape[1] - last));
        }
        var cg = cat(guideRows, 0);
        var cp = preserve.Count == 0 ? zeros(0, ce.shape[1]) : ContextVectors(pipe, preserve, o.TokenRule == "last" ? "last" : "through-end");
        if (o.TokenRule != "last" && preserve.Count > 0)
        {
            // Paper-era: preserve terms use every position.
            cp = pipe.EncodePrompts(preserve).reshape(-1, ce.shape[1]);
        }
        var preserveScale = o.PreserveScale ?? (o.TokenRule == "last" ? 1.0 : Math.Max(0.1, 1.0 / Math.Max(1, preserve.Count)));
        int matrices = 0;
        double before = 0, after = 0, drift = 0, norm = 0;
        foreach (var (name, p) in pipe.Unet.named_parameters().ToList())
        {
            if (!(name.Contains(".attn2.to_k.", StringComparison.Ordinal) || name.Contains(".attn2.to_v.", StringComparison.Ordinal)) || !name.EndsWith(".weight", StringComparison.Ordinal))
            {
                continue;
            }
            var targets = matmul(cg, p.t());
            before += (matmul(ce, p.t()) - targets).Squared().sum().item<float>();
            var edited = UceSolve(p, ce, targets, cp, o.EraseScale, preserveScale, o.Lambda);
            after += (matmul(ce, edited.t()) - targets).Squared().sum().item<float>();
            if (cp.shape[0] > 0)
            {
                drift += (matmul(cp, edited.t()) - matmul(cp, p.t())).Squared().sum().item<float>();
                norm += matmul(cp, p.t()).Squared().sum().item<float>();
            }
            p.copy_(edited);
            matrices++;
        }
        return new UceReport(o.TokenRule, matrices, (int)ce.shape[0], (int)cp.shape[0], Math.Sqrt(before), Math.Sqrt(after), norm > 0 ? Math.Sqrt(drift / norm) : 0);
    }
}

/// <summary>Erasure checkpoints: the trained UNet tensors only (step-NNNNNN/unet.safetensors), applied over the base to restore B′ at that step.</summary>
public static class ErasureCheckpoints
{
    public const string File = "unet.safetensors";

    public static void Save(UNet2DConditionModel unet, IEnumerable<string> names, string directory)
    {
        Directory.CreateDirectory(directory);
        var wanted = names.ToHashSet(StringComparer.Ordinal);
        using var noGrad = no_grad();
        Pipelines.Models.Checkpoints.SafetensorsFile.Write(Path.Combine(directory, File),
            unet.named_parameters().Where(p => wanted.Contains(p.name)).Select(p => (p.name, (Tensor)p.parameter.detach())).ToList());
    }

    /// <summary>Overwrites the UNet's tensors named in the checkpoint; returns how many.</summary>
    public static int Apply(UNet2DConditionModel unet, string directory)
    {
        using var file = Pipelines.Models.Checkpoints.SafetensorsFile.Open(Path.Combine(directory, File));
        var parameters = unet.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        using var noGrad = no_grad();
        var n = 0;
        foreach (var key in file.Entries.Keys)
        {
            if (!parameters.TryGetValue(key, out var p))
            {
                throw new Pipelines.Models.Checkpoints.CheckpointException($"{File}: tensor \"{key}\" is not a parameter of this UNet");
            }
            using var t = file.Read(key);
            if (!t.shape.SequenceEqual(p.shape))
            {
                throw new Pipelines.Models.Checkpoints.CheckpointException($"{File}: tensor \"{key}\" has shape [{string.Join(", ", t.shape)}], the UNet's is [{string.Join(", ", p.shape)}]");
            }
            p.copy_(t);
            n++;
        }
        return n;
    }

    /// <summary>The checkpoint folders under a directory, in step order, with their steps.</summary>
    public static IReadOnlyList<(int Step, string Path)> List(string directory) =>
        !Directory.Exists(directory) ? [] : Directory.GetDirectories(directory, "step-*")
            .Select(d => (Step: int.TryParse(Path.GetFileName(d)["step-".Length..], out var s) ? s : -1, Path: d))
            .Where(x => x.Step >= 0 && System.IO.File.Exists(Path.Combine(x.Path, File))).OrderBy(x => x.Step).ToList();
}
