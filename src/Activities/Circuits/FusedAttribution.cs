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
        long b = clean.shape[0], t = clean.shape[1], d = cfg.DModel;
        // Positions before the first one where any pair's tokens differ have Δ = 0 exactly (causal attention: every
        // activation there depends on the shared prefix only), so Δ and every product run over positions p₀… only.
        var p0 = SharedPrefix(clean, corrupted);
        var tt = t - p0;
        if (tt == 0)
        {
            return zeros(graph.NForward, graph.NBackward, dtype: wide, device: clean.device).MoveToOuterDisposeScope();
        }
        Tensor Tail(Tensor x) => p0 == 0 ? x : x.narrow(1, p0, tt);
        var star = new Captured(graph.Layers);
        using (no_grad())
        {
            // The corrupted run's logits are never used: it stops after the last block (no unembedding).
            model.RunWithHooks(corrupted, CaptureHooks(star), attentionMask, Fused with { StopAtLayer = graph.Layers }).Dispose();
        }
        var cleanValues = new Captured(graph.Layers);
        // Attribution needs activation gradients only: freeze the weights so backward skips their gradients, and let
        // the token embeddings be the leaf that gradients flow from.
        using var frozen = new FrozenWeights(model);
        var scores = zeros(graph.NForward, graph.NBackward, dtype: wide, device: clean.device);
        Tensor? flat = null; // Δ [n_forward, B·(T − p₀)·d], known once the clean run (α = 1, run first) has been seen
        Tensor? logitsGrad = null;
        var sums = new (Tensor Grads, Tensor Mlp)?[graph.Layers]; // Σ over runs of g/s (q, k, v) and the MLP input gradient
        // Per run and layer, the norm's x̂ [B, T − p₀, d] and c₂ [3H, B·(T − p₀)]: the x̂ term of the norm Jacobian,
        // folded into the layer's one GEMM at the end (so Δ is read once per layer, not once per run).
        var xTerms = Enumerable.Range(0, graph.Layers).Select(_ => new List<(Tensor X, Tensor C2)>()).ToArray();
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
                    var scale = h.Squared().mean([-1L], keepdim: true).Plus(Scalars.Of(cfg.NormEps)).sqrt();
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
                : star.Embed!.Plus((x.detach() - star.Embed!).mul(Scalars.Of(alpha))).requires_grad_(true)));
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
                var delta = empty(graph.NForward, b, tt, d, dtype: wide, device: clean.device);
                delta[0] = Tail(star.Embed! - cleanValues.Embed!).to(wide);
                for (var l = 0; l < graph.Layers; l++)
                {
                    var first = graph.HeadIndex(l, 0);
                    var dz = Tail(star.Z[l]! - cleanValues.Z[l]!).to(wide);
                    // (z* − z)_h·W_O[h] per head as one batched product over views ([H, B·T, dh] × [H, dh, d]).
                    delta[first..(first + graph.Heads)] = matmul(dz.reshape(b * tt, graph.Heads, -1).transpose(0, 1), model.blocks[l].attn.W_O.detach().to(wide)).view(graph.Heads, b, tt, d);
                    delta[graph.MlpIndex(l)] = Tail(star.Mlp[l]! - cleanValues.Mlp[l]!).to(wide);
                }
                // A bf16 model keeps Δ in bf16 (half the memory, the CPU's bf16 GEMMs); every product is added to
                // the float32 scores.
                flat = delta.view(graph.NForward, -1).to(store).MoveToOuterDisposeScope();
            }
            var post = Tail(capture.GradOrZero(HookNames.ResidPost(graph.Layers - 1)).detach()).to(wide).reshape(-1);
            logitsGrad = logitsGrad is null ? post.clone().MoveToOuterDisposeScope() : logitsGrad.PlusInPlace(post);
            for (var l = 0; l < graph.Layers; l++)
            {
                using var layerScope = NewDisposeScope();
                var (scaled, c2, mlpGrad) = RunTerms(l, capture, scales[l]!, wide, Tail);
                // Detached from the per-run scopes; disposed after the final GEMMs.
                sums[l] = sums[l] is null ? (scaled.DetachFromDisposeScope(), mlpGrad.clone().DetachFromDisposeScope())
                    : (sums[l]!.Value.Grads.PlusInPlace(scaled), sums[l]!.Value.Mlp.PlusInPlace(mlpGrad));
                xTerms[l].Add((Tail(normalized[l]!).contiguous().DetachFromDisposeScope(), c2.DetachFromDisposeScope()));
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
            var mlp = graph.MlpInputIndex(l);
            var prevMlp = graph.PrevIndex(mlp);
            var norm = model.blocks[l].ln1;
            var w = norm.w.detach().to(wide);
            var tilde = Projections(l).Select(p => p.Weight.detach().to(wide) * w.view(1, -1, 1)).ToList(); // W̃ = w⊙W [H,d,dh]
            // The layer's GEMM columns [3H + 1, B·T, d]: y_h = (g/s)_h·W̃_hᵀ per head, batched over views
            // ([H, B·T, dh] × [H, dh, d] → [H, B·T, d]), then the MLP input's gradient. Built in place: one buffer.
            var heads = 3 * graph.Heads;
            var bt = grads.shape[1] * grads.shape[2];
            var buffer = empty(heads + 1, bt, d, dtype: wide, device: clean.device);
            for (var i = 0; i < tilde.Count; i++)
            {
                using var product = matmul(grads[i].reshape(bt, graph.Heads, -1).transpose(0, 1), tilde[i].transpose(1, 2));
                buffer.narrow(0, i * graph.Heads, graph.Heads).copy_(product);
            }
            var y = buffer.narrow(0, 0, heads);
            if (norm.Kind == NormKind.LayerNorm)
            {
                // The mean term: c₁ = (g/s)·Σ_d W̃ / d, the same for every d.
                var c1 = cat(tilde.Select((wt, i) => einsum("bthe,he->hbt", grads[i], wt.sum(1))).ToList(), 0).view(heads, bt, 1).div(Scalars.Of(cfg.DModel));
                y.sub_(c1);
            }
            // Σ_runs c₂ ⊗ x̂ as batched products over positions ([n, 3H, m] × [n, m, d]), in chunks of positions so the
            // temporary stays small, not one pass over y per run.
            var c2s = stack(xTerms[l].Select(r => r.C2).ToList()); // [m, 3H, B·T]
            var xs = stack(xTerms[l].Select(r => r.X.view(bt, -1)).ToList()); // [m, B·T, d]
            for (long at = 0; at < bt; at += 64)
            {
                var n = Math.Min(64, bt - at);
                using var chunk = NewDisposeScope();
                y.narrow(1, at, n).sub_(bmm(c2s.narrow(2, at, n).permute(2, 1, 0), xs.narrow(1, at, n).permute(1, 0, 2)).transpose(0, 1));
            }
            foreach (var (x, c2) in xTerms[l])
            {
                x.Dispose();
                c2.Dispose();
            }
            buffer[heads] = mlpGrad.view(bt, d);
            // One GEMM over Δ per layer: the q/k/v inputs' 3H columns and the MLP input's column. Sources after the
            // attention inputs (this layer's heads) get products in the q/k/v columns too; those are not edges and are
            // dropped.
            var columns = buffer.view(heads + 1, -1).t().to(store);
            var products = matmul(flat![..prevMlp], columns).to(wide);
            scores[..prev, first..(first + heads)] += products[..prev, ..heads];
            scores[..prevMlp, mlp] += products[.., heads];
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
    /// One run's terms for the edges into layer <paramref name="l"/>. For a head's input the gradient is
    /// G = J_normᵀ(g·Wᵀ) = (w⊙y − mean(w⊙y) − x̂·mean(w⊙y⊙x̂))/s with y = g·Wᵀ (LayerNorm; RMSNorm drops the mean term).
    /// It is never materialized per run: with W̃ = w⊙W, Σ_d Δ·G = Δ·((g/s)W̃ᵀ − c₁ − x̂c₂), where c₁ = (g/s)·Σ_d W̃ / d and
    /// c₂ = (g/s)·(x̂W̃) / d, and x̂W̃ is the projection the forward already made (q minus its constant part). The terms
    /// linear in g/s are summed over runs; x̂c₂ changes with each run's x̂ and is kept as (x̂, c₂). At the end each layer
    /// costs one [n_forward, B·T·d] × [B·T·d, 3H+1] GEMM.
    /// </summary>
    private (Tensor ScaledGrads, Tensor C2, Tensor MlpGrad) RunTerms(int l, GradientCapture capture, Tensor scale, ScalarType wide, Func<Tensor, Tensor> tail)
    {
        var norm = model.blocks[l].ln1;
        var s = tail(scale).to(wide).unsqueeze(-1); // [B,T−p₀,1,1]
        var d = model.Config.DModel;
        var grads = new List<Tensor>();
        var c2 = new List<Tensor>();
        foreach (var (hook, weight, bias) in Projections(l))
        {
            var g = tail(capture.GradOrZero(HookNames.Attn(l, hook)).detach()).to(wide) / s; // g/s [B,T−p₀,H,dh]
            grads.Add(g);
            // x̂W̃ = (norm output − b)·W = projection − b_W − b·W.
            var projected = tail(capture.Activation(HookNames.Attn(l, hook)).detach()).to(wide);
            var constant = bias?.detach().to(wide) ?? zeros(weight.shape[0], weight.shape[2], dtype: wide, device: weight.device);
            if (norm.b is not null)
            {
                constant = constant.Plus(einsum("d,hde->he", norm.b.detach().to(wide), weight.detach().to(wide)));
            }
            c2.Add(einsum("bthe,bthe->hbt", g, projected - constant).div(Scalars.Of(d)));
        }
        var gm = tail(capture.GradOrZero(HookNames.MlpIn(l)).detach()).to(wide).reshape(-1);
        return (stack(grads), cat(c2, 0).view(3 * graph.Heads, -1), gm);
    }

    /// <summary>The number of leading positions where every pair's clean and corrupted tokens agree.</summary>
    public static long SharedPrefix(Tensor clean, Tensor corrupted)
    {
        if (!clean.shape.SequenceEqual(corrupted.shape) || clean.dim() != 2)
        {
            return 0;
        }
        using var scope = NewDisposeScope();
        var differs = clean.ne(corrupted).any(0).nonzero();
        return differs.shape[0] == 0 ? clean.shape[1] : differs[0, 0].item<long>();
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
