using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>
/// EAP and EAP-IG-inputs on the model's ordinary (fused) forward, without per-head copies of the residual stream
/// (research §13.2b). The gradient at a head's q/k/v input is mapped back analytically from the gradient at its
/// projected q/k/v: G = J_LNᵀ(g_h·W_hᵀ), J_LN the input Jacobian of the block's first norm at that position, shared by
/// every head. Head outputs enter Δ as (z* − z)·W_O per head. Scores are one GEMM per layer over the flattened
/// [n_forward, B·T·d] Δ. The numbers equal <see cref="EdgeAttribution"/>'s split-input path (a test checks it);
/// the passes are the bare ones: one corrupted forward, and one forward+backward per α (α = 1 is the clean run).
/// Under GQA a query head's own k/v gradient is not separable in the fused pass, so those models use the split path.
/// </summary>
public sealed class FusedAttribution(HookedTransformer model, ComputationGraph graph)
{
    private static readonly ForwardOptions Fused = new();

    public static bool Supports(TransformerConfig config) => config.KvHeads == config.NHeads;

    /// <summary>Source values of a no-grad pass: embed [B,T,d], z per layer [B,T,H,dh], mlp_out per layer.</summary>
    private sealed class Captured(int layers)
    {
        public Tensor? Embed;
        public readonly Tensor?[] Z = new Tensor?[layers];
        public readonly Tensor?[] Mlp = new Tensor?[layers];
    }

    private List<(string, Func<Tensor, HookPoint, Tensor?>)> CaptureHooks(Captured into)
    {
        var hooks = new List<(string, Func<Tensor, HookPoint, Tensor?>)>
        {
            ("hook_embed", (x, _) => { into.Embed = x.detach().DetachFromDisposeScope(); return null; }),
        };
        for (var l = 0; l < graph.Layers; l++)
        {
            var layer = l;
            hooks.Add((HookNames.Z(l), (x, _) => { into.Z[layer] = x.detach().DetachFromDisposeScope(); return null; }));
            hooks.Add((HookNames.MlpOut(l), (x, _) => { into.Mlp[layer] = x.detach().DetachFromDisposeScope(); return null; }));
        }
        return hooks;
    }

    /// <summary>
    /// Scores [n_forward, n_backward] with the gradient averaged over runs whose token embeddings are e′ + α(e − e′)
    /// (EAP: α = {1}; EAP-IG-inputs: {1/m, …, 1}; clean-corrupted: {0, 1}).
    /// </summary>
    public Tensor Integrated(Tensor clean, Tensor corrupted, Func<Tensor, Tensor> loss, double[] alphas, Tensor? attentionMask)
    {
        if (!alphas.Contains(1.0))
        {
            throw new ArgumentException("the α grid must include the clean run (α = 1)");
        }
        using var scope = NewDisposeScope();
        var cfg = model.Config;
        var wide = Norm.Wide(model.W_E.dtype);
        var store = model.W_E.dtype == ScalarType.BFloat16 ? ScalarType.BFloat16 : wide;
        var star = new Captured(graph.Layers);
        using (no_grad())
        {
            model.RunWithHooks(corrupted, CaptureHooks(star), attentionMask, Fused).Dispose();
        }
        var cleanValues = new Captured(graph.Layers);
        // Attribution needs activation gradients only: freeze the weights so backward skips their gradients, and let
        // the token embeddings be the leaf that gradients flow from.
        using var frozen = new FrozenWeights(model);
        long b = clean.shape[0], t = clean.shape[1], d = cfg.DModel;
        var scores = zeros(graph.NForward, graph.NBackward, dtype: wide, device: clean.device);
        Tensor? flat = null; // Δ [n_forward, B·T·d], known once the clean run (α = 1, run first) has been seen
        Tensor? deltaSums = null; // Σ_d Δ [n_forward, B·T]
        Tensor? logitsGrad = null;
        var sums = new (Tensor Grads, Tensor Mlp)?[graph.Layers]; // Σ over runs of g/s (q, k, v) and the MLP input gradient
        // The clean run first: its values make Δ, so every run's contribution is scored as soon as it is computed.
        foreach (var alpha in alphas.OrderByDescending(a => a == 1.0))
        {
            using var step = NewDisposeScope();
            var names = new List<string> { HookNames.ResidPost(graph.Layers - 1) };
            for (var l = 0; l < graph.Layers; l++)
            {
                names.AddRange([HookNames.Q(l), HookNames.K(l), HookNames.V(l), HookNames.MlpIn(l)]);
            }
            using var capture = new GradientCapture(model, names);
            var removers = new List<IDisposable>();
            // The first norm's statistics, for its Jacobian: forward values only (no retained gradients), recomputed
            // from the norm's input with the norm's own arithmetic, so the norm itself keeps libtorch's fused kernel.
            var normalized = new Tensor?[graph.Layers];
            var scales = new Tensor?[graph.Layers];
            for (var l = 0; l < graph.Layers; l++)
            {
                var layer = l;
                removers.Add(model.Hook(HookNames.AttnIn(l)).Add((x, _) =>
                {
                    using var statistics = NewDisposeScope();
                    using var noGrad = no_grad();
                    var h = x.detach().to(wide);
                    if (model.blocks[layer].ln1.Kind == NormKind.LayerNorm)
                    {
                        h = h - h.mean([-1L], keepdim: true);
                    }
                    var scale = h.square().mean([-1L], keepdim: true).add(Scalars.Of(cfg.NormEps)).sqrt();
                    normalized[layer] = (h / scale).DetachFromDisposeScope();
                    scales[layer] = scale.DetachFromDisposeScope();
                    return null;
                }));
            }
            if (alpha == 1.0)
            {
                removers.AddRange(CaptureHooks(cleanValues).Select(h => model.Hook(h.Item1).Add(h.Item2)));
            }
            removers.Add(model.Hook("hook_embed").Add((x, _) => alpha == 1.0
                ? x.detach().requires_grad_(true)
                : (star.Embed! + (x.detach() - star.Embed!).mul(Scalars.Of(alpha))).requires_grad_(true)));
            try
            {
                using (enable_grad())
                {
                    loss(model.Forward(clean, attentionMask, options: Fused)).backward();
                }
            }
            finally
            {
                foreach (var r in removers)
                {
                    r.Dispose();
                }
            }
            if (flat is null)
            {
                var delta = empty(graph.NForward, b, t, d, dtype: wide, device: clean.device);
                delta[0] = (star.Embed! - cleanValues.Embed!).to(wide);
                for (var l = 0; l < graph.Layers; l++)
                {
                    var first = graph.HeadIndex(l, 0);
                    var dz = (star.Z[l]! - cleanValues.Z[l]!).to(wide);
                    // (z* − z)_h·W_O[h] per head as one batched product over views ([H, B·T, dh] × [H, dh, d]).
                    delta[first..(first + graph.Heads)] = matmul(dz.reshape(b * t, graph.Heads, -1).transpose(0, 1), model.blocks[l].attn.W_O.detach().to(wide)).view(graph.Heads, b, t, d);
                    delta[graph.MlpIndex(l)] = (star.Mlp[l]! - cleanValues.Mlp[l]!).to(wide);
                }
                // A bf16 model keeps Δ in bf16 (half the memory, the CPU's bf16 GEMMs); every product is added to
                // the float32 scores.
                flat = delta.view(graph.NForward, -1).to(store).MoveToOuterDisposeScope();
                deltaSums = delta.sum([-1L]).view(graph.NForward, -1).MoveToOuterDisposeScope();
            }
            var post = capture.GradOrZero(HookNames.ResidPost(graph.Layers - 1)).detach().to(wide).reshape(-1);
            logitsGrad = logitsGrad is null ? post.clone().MoveToOuterDisposeScope() : logitsGrad.add_(post);
            for (var l = 0; l < graph.Layers; l++)
            {
                using var layerScope = NewDisposeScope();
                var (scaled, mlpGrad) = ScoreLayer(l, capture, normalized[l]!, scales[l]!, flat, scores, wide);
                // Detached from the per-run scopes; disposed after the final GEMMs.
                sums[l] = sums[l] is null ? (scaled.DetachFromDisposeScope(), mlpGrad.clone().DetachFromDisposeScope())
                    : (sums[l]!.Value.Grads.add_(scaled), sums[l]!.Value.Mlp.add_(mlpGrad));
                normalized[l]!.Dispose();
                scales[l]!.Dispose();
            }
        }
        // The terms linear in the runs' gradients: one GEMM per layer over the sums.
        scores[.., graph.LogitsIndex] += matmul(flat!, logitsGrad!.to(store)).to(wide);
        for (var l = 0; l < graph.Layers; l++)
        {
            using var layerScope = NewDisposeScope();
            var (grads, mlpGrad) = sums[l]!.Value;
            var first = graph.HeadInputIndex(l, 0, 'q');
            var prev = graph.PrevIndex(first);
            var norm = model.blocks[l].ln1;
            var w = norm.w.detach().to(wide);
            var projections = Projections(l).ToList();
            var tilde = projections.Select(p => p.Weight.detach().to(wide) * w.view(1, -1, 1)).ToList(); // W̃ = w⊙W [H,d,dh]
            // y_h = (g/s)_h·W̃_hᵀ per head, batched over views: [H, B·T, dh] × [H, dh, d] → [H, B·T, d].
            var bt = grads.shape[1] * grads.shape[2];
            var y = cat(tilde.Select((wt, i) => matmul(grads[i].reshape(bt, graph.Heads, -1).transpose(0, 1), wt.transpose(1, 2))).ToList(), 0).view(3 * graph.Heads, -1); // [3H, B·T·d]
            var block = matmul(flat![..prev], y.t().to(store)).to(wide);
            if (norm.Kind == NormKind.LayerNorm)
            {
                var c1 = cat(tilde.Select((wt, i) => einsum("bthe,he->hbt", grads[i], wt.sum(1))).ToList(), 0).view(3 * graph.Heads, -1).div(Scalars.Of(cfg.DModel));
                block -= matmul(deltaSums![..prev], c1.t());
            }
            scores[..prev, first..(first + 3 * graph.Heads)] += block;
            var mlp = graph.MlpInputIndex(l);
            scores[..graph.PrevIndex(mlp), mlp] += matmul(flat[..graph.PrevIndex(mlp)], mlpGrad.to(store)).to(wide);
            grads.Dispose();
            mlpGrad.Dispose();
        }
        scores.div_(Scalars.Of(alphas.Length));
        foreach (var x in new[] { star, cleanValues }.SelectMany(c => c.Z.Concat(c.Mlp).Append(c.Embed)))
        {
            x?.Dispose();
        }
        return scores.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Adds one run's scores of every edge into layer <paramref name="l"/>. For a head's input the gradient is
    /// G = J_normᵀ(g·Wᵀ) = (w⊙y − mean(w⊙y) − x̂·mean(w⊙y⊙x̂))/s with y = g·Wᵀ (LayerNorm; RMSNorm drops the mean term).
    /// It is never materialized: with W̃ = w⊙W, Σ_d Δ·G = (Δ·(g/s)W̃ᵀ) − (Σ_d Δ)·c₁ − (Δ·x̂)·c₂, where
    /// c₁ = (g/s)·Σ_d W̃ / d and c₂ = (g/s)·(x̂W̃) / d, and x̂W̃ is the projection the forward already made (q minus its
    /// constant part). So each layer costs one [n_forward, B·T·d] × [B·T·d, 3H+1] GEMM plus two thin ones.
    /// </summary>
    private (Tensor ScaledGrads, Tensor MlpGrad) ScoreLayer(int l, GradientCapture capture, Tensor normalized, Tensor scale, Tensor flat, Tensor scores, ScalarType wide)
    {
        var norm = model.blocks[l].ln1;
        var s = scale.to(wide).unsqueeze(-1); // [B,T,1,1]
        var xh = normalized.to(wide); // [B,T,d]
        var d = xh.shape[2];
        var grads = new List<Tensor>();
        var c2 = new List<Tensor>();
        foreach (var (hook, weight, bias) in Projections(l))
        {
            var g = capture.GradOrZero(HookNames.Attn(l, hook)).detach().to(wide) / s; // g/s [B,T,H,dh]
            grads.Add(g);
            // x̂W̃ = (norm output − b)·W = projection − b_W − b·W.
            var projected = capture.Activation(HookNames.Attn(l, hook)).detach().to(wide);
            var constant = bias?.detach().to(wide) ?? zeros(weight.shape[0], weight.shape[2], dtype: wide, device: weight.device);
            if (norm.b is not null)
            {
                constant = constant + einsum("d,hde->he", norm.b.detach().to(wide), weight.detach().to(wide));
            }
            c2.Add(einsum("bthe,bthe->hbt", g, projected - constant).div(Scalars.Of(d)));
        }
        var heads = 3 * graph.Heads;
        var first = graph.HeadInputIndex(l, 0, 'q');
        var prev = graph.PrevIndex(first);
        // The x̂ term changes with every run's x̂: scored here. The others are linear in g/s and summed over runs.
        var deltaDotX = einsum("fbtd,btd->fbt", flat[..prev].view(prev, xh.shape[0], xh.shape[1], d), xh.to(flat.dtype)).to(wide).reshape(prev, -1); // [prev, B·T]
        scores[..prev, first..(first + heads)] -= matmul(deltaDotX, cat(c2, 0).view(heads, -1).t());
        var gm = capture.GradOrZero(HookNames.MlpIn(l)).detach().to(wide).reshape(-1);
        return (stack(grads), gm);
    }

    private IEnumerable<(string Hook, Tensor Weight, Tensor? Bias)> Projections(int l)
    {
        var attn = model.blocks[l].attn;
        yield return ("q", attn.W_Q, attn.b_Q);
        yield return ("k", attn.W_K, attn.b_K);
        yield return ("v", attn.W_V, attn.b_V);
    }
}

/// <summary>Turns off requires_grad on every parameter while alive, and restores it.</summary>
public sealed class FrozenWeights : IDisposable
{
    private readonly List<TorchSharp.Modules.Parameter> _frozen = [];

    public FrozenWeights(HookedTransformer model)
    {
        foreach (var p in model.parameters())
        {
            if (p.requires_grad)
            {
                p.requires_grad_(false);
                _frozen.Add(p);
            }
        }
    }

    public void Dispose()
    {
        foreach (var p in _frozen)
        {
            p.requires_grad_(true);
        }
    }
}
