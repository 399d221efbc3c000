using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>
/// Span-aggregated scores of one batch (research §7.5), summed over its examples (divide by the dataset size).
/// Non-crossing: [S, n_forward, n_backward] per statistic. Crossing (inside heads, key span → query span):
/// [S_query, S_key, L·H, 3] per statistic, the last axis q, k, v.
/// </summary>
public sealed class PositionalScores : IDisposable
{
    public static readonly string[] Statistics = ["sum", "avg", "sum_abs_pos", "sum_abs_exp", "max_abs"];

    public required Dictionary<string, Tensor> NonCrossing { get; init; }
    public required Dictionary<string, Tensor> Crossing { get; init; }

    public void Add(PositionalScores other)
    {
        foreach (var s in Statistics)
        {
            NonCrossing[s].PlusInPlace(other.NonCrossing[s]);
            Crossing[s].PlusInPlace(other.Crossing[s]);
        }
    }

    public void Dispose()
    {
        foreach (var t in NonCrossing.Values.Concat(Crossing.Values))
        {
            t.Dispose();
        }
    }
}

/// <summary>
/// Position-aware edge attribution (PEAP, research §7). Every node has one instance per position:
/// <list type="bullet">
/// <item>Non-crossing edges (same position) score r[p] = Σ_i Δ_u[p]_i · ∂ℒ/∂I_v[p]_i, with the EAP sign convention
/// of this project (ℒ = −metric: positive means corrupting the edge lowers the metric; PEAP's code uses +metric).</item>
/// <item>Crossing edges inside a head, key position t′ → query position t ≥ t′, via v, k or q, with the patched
/// head output computed exactly (softmax recomputed) and dotted with g_t = ∂ℒ/∂result[t]. The closed forms of
/// research §7.4: for one changed logit (δ), z′ − z = c·(v_{t′} − z) with c = a(e^δ − 1)/(1 + a(e^δ − 1)).</item>
/// </list>
/// Scores are aggregated over each example's spans (masks [B, S, T]) into the five statistics of §7.5.
/// </summary>
public sealed class PositionalAttribution(HookedTransformer model, ComputationGraph graph)
{
    private static readonly ForwardOptions Split = new() { UseAttnResult = true, SplitQkvInput = true };

    /// <summary>Per-position non-crossing scores of one batch: [B, T, n_forward, n_backward] (zero off the real edges).</summary>
    public Tensor PerPosition(Tensor delta, IReadOnlyDictionary<string, Tensor> grads)
    {
        var (b, t) = (delta.shape[0], delta.shape[1]);
        var r = zeros(b, t, graph.NForward, graph.NBackward, dtype: Norm.Wide(delta.dtype), device: delta.device);
        for (var l = 0; l < graph.Layers; l++)
        {
            foreach (var qkv in "qkv")
            {
                var first = graph.HeadInputIndex(l, 0, qkv);
                var prev = graph.PrevIndex(first);
                r[.., .., ..prev, first..(first + graph.Heads)] += einsum("btfd,bthd->btfh", delta[.., .., ..prev], grads[HookNames.Input(l, qkv)]);
            }
            var mlp = graph.MlpInputIndex(l);
            r[.., .., ..graph.PrevIndex(mlp), mlp] += einsum("btfd,btd->btf", delta[.., .., ..graph.PrevIndex(mlp)], grads[HookNames.MlpIn(l)]);
        }
        r[.., .., .., graph.LogitsIndex] += einsum("btfd,btd->btf", delta, grads[HookNames.ResidPost(graph.Layers - 1)]);
        return r;
    }

    /// <summary>
    /// Scores one batch. <paramref name="spans"/>: [B, S, T] float, 1 where position t is in span s (BOS in none).
    /// <paramref name="perExampleLoss"/> maps logits to ℒ per example [B] (−metric); examples do not interact, so one
    /// backward of the sum gives every example its own gradient.
    /// </summary>
    public PositionalScores Score(Tensor clean, Tensor corrupted, Tensor mask, Tensor spans, Func<Tensor, Tensor> perExampleLoss)
    {
        using var scope = NewDisposeScope();
        var run = new CircuitRun(model, graph);
        var cfg = model.Config;
        var rotary = cfg.Positional == PositionalKind.Rotary;
        string Q(int l) => rotary ? HookNames.RotQ(l) : HookNames.Q(l);
        string K(int l) => rotary ? HookNames.RotK(l) : HookNames.K(l);
        string V(int l) => HookNames.V(l);

        // Counterfactual run: source outputs and every head's q, k, v.
        var starred = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var corruptValues = run.SourceValues(corrupted, mask);
        using (no_grad())
        {
            var hooks = Enumerable.Range(0, graph.Layers).SelectMany(l => new[] { Q(l), K(l), V(l) })
                .Select(name => (name, (Func<Tensor, HookPoint, Tensor?>)((x, _) => { starred[name] = x.detach().clone().DetachFromDisposeScope(); return null; })));
            model.RunWithHooks(corrupted, hooks, mask, Split);
        }

        // Clean run with gradients at every destination and at every head's result.
        var cleanValues = run.SourceValues(clean, mask);
        var destinations = Enumerable.Range(0, graph.Layers).SelectMany(l => new[]
        {
            HookNames.Input(l, "q"), HookNames.Input(l, "k"), HookNames.Input(l, "v"), HookNames.MlpIn(l),
        }).Append(HookNames.ResidPost(graph.Layers - 1)).ToList();
        var internals = Enumerable.Range(0, graph.Layers).SelectMany(l => new[] { HookNames.Result(l), HookNames.Pattern(l), Q(l), K(l), V(l) }).ToList();
        using var capture = new GradientCapture(model, destinations.Concat(internals).Distinct());
        using (enable_grad())
        {
            perExampleLoss(model.Forward(clean, mask, options: Split)).sum().backward();
        }
        var grads = destinations.ToDictionary(n => n, n => capture.GradOrZero(n).detach(), StringComparer.Ordinal);
        model.zero_grad();

        var wide = Norm.Wide(cleanValues.dtype);
        var spanMask = spans.to(wide);
        var r = PerPosition(corruptValues - cleanValues, grads); // [B,T,F,X]
        var sum = einsum("bst,btfx->sfx", spanMask, r);
        var absSum = einsum("bst,btfx->sfx", spanMask, r.abs());
        var perExampleSum = einsum("bst,btfx->bsfx", spanMask, r);
        var lengths = spanMask.sum(-1).clamp_min(Scalars.Of(1)); // [B,S]
        var nonCrossing = new Dictionary<string, Tensor>
        {
            ["sum"] = sum,
            ["avg"] = (perExampleSum / lengths.unsqueeze(-1).unsqueeze(-1)).sum(0L),
            ["sum_abs_pos"] = absSum,
            ["sum_abs_exp"] = perExampleSum.abs().sum(0L),
            ["max_abs"] = (r.abs().unsqueeze(1) * spanMask.unsqueeze(-1).unsqueeze(-1)).amax([2]).sum(0L),
        };

        // Crossing edges, layer by layer: [B,H,T,T'] per kind.
        var tLen = clean.shape[1];
        var causal = ones(tLen, tLen, dtype: ScalarType.Bool, device: clean.device).tril();
        var real = mask.to(ScalarType.Bool);
        var allowed = causal.unsqueeze(0).logical_and(real.unsqueeze(1)).logical_and(real.unsqueeze(2)).unsqueeze(1); // [B,1,T,T']
        var pairCount = einsum("bst,btu,bru->bsr", spanMask, allowed.squeeze(1).to(wide), spanMask); // [B,S,S']
        var crossing = PositionalScores.Statistics.ToDictionary(s => s, _ => zeros(spans.shape[1], spans.shape[1], graph.Layers * graph.Heads, 3, dtype: wide, device: clean.device));
        var scale = Scalars.Of(1 / Math.Sqrt(cfg.HeadDim));
        for (var l = 0; l < graph.Layers; l++)
        {
            using var layer = NewDisposeScope();
            var wO = model.blocks[l].attn.W_O.detach().to(wide); // [H,dh,d]
            var g = capture.GradOrZero(HookNames.Result(l)).detach().to(wide); // [B,T,H,d]
            var result = capture.Activation(HookNames.Result(l)).detach().to(wide);
            var pattern = capture.Activation(HookNames.Pattern(l)).detach().to(wide); // [B,H,T,T']
            var q = capture.Activation(Q(l)).detach().to(wide);
            var k = Expand(capture.Activation(K(l)).detach().to(wide));
            var v = Expand(capture.Activation(V(l)).detach().to(wide));
            var qs = starred[Q(l)].to(wide);
            var ks = Expand(starred[K(l)].to(wide));
            var vs = Expand(starred[V(l)].to(wide));
            var vO = einsum("bThe,hed->bThd", v, wO);
            var alpha = einsum("bThd,bthd->bhtT", vO, g); // ⟨v_t′ W_O, g_t⟩
            var beta = einsum("bthd,bthd->bht", result, g).unsqueeze(-1); // ⟨result[t], g_t⟩
            var vEdge = pattern * einsum("bThd,bthd->bhtT", einsum("bThe,hed->bThd", vs - v, wO), g);
            var kEdge = Coefficient(pattern, einsum("bthe,bThe->bhtT", q, ks - k).mul(scale)) * (alpha - beta);
            var qEdge = Coefficient(pattern, einsum("bthe,bThe->bhtT", qs - q, k).mul(scale)) * (alpha - beta);
            var x = stack([qEdge, kEdge, vEdge], -1).masked_fill(allowed.unsqueeze(-1).logical_not(), Scalars.Of(0)); // [B,H,T,T',3]
            var agg = einsum("bst,bhtuc,bru->bsrhc", spanMask, x, spanMask); // [B,S,S',H,3]
            var aggAbs = einsum("bst,bhtuc,bru->bsrhc", spanMask, x.abs(), spanMask);
            var heads = TensorIndex.Slice(l * graph.Heads, (l + 1) * graph.Heads);
            crossing["sum"][.., .., heads] += agg.sum(0L);
            crossing["avg"][.., .., heads] += (agg / pairCount.clamp_min(Scalars.Of(1)).unsqueeze(-1).unsqueeze(-1)).sum(0L);
            crossing["sum_abs_pos"][.., .., heads] += aggAbs.sum(0L);
            crossing["sum_abs_exp"][.., .., heads] += aggAbs.sum(0L); // PEAP: Σ|r| for both (§7.5)
            // max_abs is not defined for crossing edges (PEAP sets it to 0).
        }
        var scores = new PositionalScores
        {
            NonCrossing = nonCrossing.ToDictionary(p => p.Key, p => p.Value.MoveToOuterDisposeScope()),
            Crossing = crossing.ToDictionary(p => p.Key, p => p.Value.MoveToOuterDisposeScope()),
        };
        foreach (var t in starred.Values)
        {
            t.Dispose();
        }
        return scores;

        Tensor Expand(Tensor kv) => kv.shape[2] == graph.Heads ? kv : kv.repeat_interleave(graph.Heads / kv.shape[2], dim: 2);
    }

    /// <summary>
    /// c = a(e^δ − 1) / (1 + a(e^δ − 1)): the weight that moves z_t towards v_t′ when the logit (t, t′) changes by δ.
    /// For δ &gt; 0 it is evaluated as a(1 − e^−δ) / ((1 − a)e^−δ + a), which cannot overflow.
    /// </summary>
    public static Tensor Coefficient(Tensor a, Tensor delta)
    {
        var m = delta.expm1();
        var low = a * m / (a * m).Plus(Scalars.Of(1));
        var e = delta.neg().exp();
        var high = a * e.OneMinus() / (a.OneMinus() * e).Plus(a);
        return where(delta.gt(Scalars.Of(0)), high, low);
    }
}
