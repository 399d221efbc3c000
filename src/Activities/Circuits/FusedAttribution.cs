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
            hooks.Add(($"blocks.{l}.attn.hook_z", (x, _) => { into.Z[layer] = x.detach().DetachFromDisposeScope(); return null; }));
            hooks.Add(($"blocks.{l}.hook_mlp_out", (x, _) => { into.Mlp[layer] = x.detach().DetachFromDisposeScope(); return null; }));
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
        var star = new Captured(graph.Layers);
        using (no_grad())
        {
            model.RunWithHooks(corrupted, CaptureHooks(star), attentionMask, Fused).Dispose();
        }
        var cleanValues = new Captured(graph.Layers);
        // Attribution needs activation gradients only: freeze the weights so backward skips their gradients, and let
        // the token embeddings be the leaf that gradients flow from.
        using var frozen = new FrozenWeights(model);
        // Σ over runs of the input gradient of every destination: per layer [B,T,3H+1,d] (q heads, k heads, v heads, MLP).
        Tensor? logitsGrad = null;
        var inputGrads = new Tensor?[graph.Layers];
        foreach (var alpha in alphas)
        {
            using var step = NewDisposeScope();
            var names = new List<string> { $"blocks.{graph.Layers - 1}.hook_resid_post" };
            for (var l = 0; l < graph.Layers; l++)
            {
                names.AddRange([$"blocks.{l}.attn.hook_q", $"blocks.{l}.attn.hook_k", $"blocks.{l}.attn.hook_v", $"blocks.{l}.hook_mlp_in"]);
            }
            using var capture = new GradientCapture(model, names);
            var removers = new List<IDisposable>();
            // The first norm's statistics, for its Jacobian: forward values only (no retained gradients).
            var normalized = new Tensor?[graph.Layers];
            var scales = new Tensor?[graph.Layers];
            for (var l = 0; l < graph.Layers; l++)
            {
                var layer = l;
                removers.Add(model.Hook($"blocks.{l}.ln1.hook_normalized").Add((x, _) => { normalized[layer] = x.detach().DetachFromDisposeScope(); return null; }));
                removers.Add(model.Hook($"blocks.{l}.ln1.hook_scale").Add((x, _) => { scales[layer] = x.detach().DetachFromDisposeScope(); return null; }));
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
            var post = capture.GradOrZero($"blocks.{graph.Layers - 1}.hook_resid_post").detach().to(wide);
            logitsGrad = logitsGrad is null ? post.clone().MoveToOuterDisposeScope() : logitsGrad.add_(post);
            for (var l = 0; l < graph.Layers; l++)
            {
                var attn = model.blocks[l].attn;
                var y = cat([
                    einsum("bthe,hde->bthd", capture.GradOrZero($"blocks.{l}.attn.hook_q").detach().to(wide), attn.W_Q.detach().to(wide)),
                    einsum("bthe,hde->bthd", capture.GradOrZero($"blocks.{l}.attn.hook_k").detach().to(wide), attn.W_K.detach().to(wide)),
                    einsum("bthe,hde->bthd", capture.GradOrZero($"blocks.{l}.attn.hook_v").detach().to(wide), attn.W_V.detach().to(wide)),
                ], 2); // [B,T,3H,d]: gradient at the norm's output, per head
                var g = NormInputGradient(model.blocks[l].ln1, y, normalized[l]!, scales[l]!);
                normalized[l]!.Dispose();
                scales[l]!.Dispose();
                var all = cat([g, capture.GradOrZero($"blocks.{l}.hook_mlp_in").detach().to(wide).unsqueeze(2)], 2);
                inputGrads[l] = inputGrads[l] is null ? all.MoveToOuterDisposeScope() : inputGrads[l]!.add_(all);
            }
            model.zero_grad();
        }

        // Δ [n_forward, B·T·d], flattened once.
        long b = clean.shape[0], t = clean.shape[1], d = cfg.DModel;
        var delta = empty(graph.NForward, b, t, d, dtype: wide, device: clean.device);
        delta[0] = (star.Embed! - cleanValues.Embed!).to(wide);
        for (var l = 0; l < graph.Layers; l++)
        {
            var first = graph.HeadIndex(l, 0);
            var dz = (star.Z[l]! - cleanValues.Z[l]!).to(wide);
            delta[first..(first + graph.Heads)] = einsum("bthe,hed->hbtd", dz, model.blocks[l].attn.W_O.detach().to(wide));
            delta[graph.MlpIndex(l)] = (star.Mlp[l]! - cleanValues.Mlp[l]!).to(wide);
        }
        var flat = delta.view(graph.NForward, -1);
        var scores = zeros(graph.NForward, graph.NBackward, dtype: wide, device: clean.device);
        var runs = Scalars.Of(alphas.Length);
        for (var l = 0; l < graph.Layers; l++)
        {
            var first = graph.HeadInputIndex(l, 0, 'q');
            var prev = graph.PrevIndex(first); // the same for q, k, v and (sequential blocks) one less than the MLP's
            var g = inputGrads[l]!.permute(2, 0, 1, 3).reshape(3 * graph.Heads + 1, -1); // [3H+1, B·T·d]
            var mlp = graph.MlpInputIndex(l);
            var mlpPrev = graph.PrevIndex(mlp);
            var width = Math.Max(prev, mlpPrev);
            var block = matmul(flat[..width], g.t()).div(runs); // [width, 3H+1]
            scores[..prev, first..(first + 3 * graph.Heads)] += block[..prev, ..(3 * graph.Heads)];
            scores[..mlpPrev, mlp] += block[..mlpPrev, 3 * graph.Heads];
        }
        scores[.., graph.LogitsIndex] += matmul(flat, logitsGrad!.reshape(-1)).div(runs);
        foreach (var x in new[] { star, cleanValues }.SelectMany(c => c.Z.Concat(c.Mlp).Append(c.Embed)))
        {
            x?.Dispose();
        }
        return scores.MoveToOuterDisposeScope();
    }

    /// <summary>Turns off requires_grad on every parameter while alive, and restores it.</summary>
    private sealed class FrozenWeights : IDisposable
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

    /// <summary>J_normᵀ·y: the gradient at the norm's input from the gradient <paramref name="y"/> [B,T,K,d] at its output.</summary>
    private static Tensor NormInputGradient(Norm norm, Tensor y, Tensor normalized, Tensor scale)
    {
        var wide = y.dtype;
        var gw = y * norm.w.detach().to(wide);
        var xh = normalized.to(wide).unsqueeze(2); // [B,T,1,d]
        var s = scale.to(wide).unsqueeze(2); // [B,T,1,1]
        var projected = xh * (gw * xh).mean([-1L], keepdim: true);
        var centered = norm.Kind == NormKind.LayerNorm ? gw - gw.mean([-1L], keepdim: true) : gw;
        return (centered - projected) / s;
    }
}
