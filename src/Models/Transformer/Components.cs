using Pipelines.Models.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Transformer;

/// <summary>LayerNorm or RMSNorm with TransformerLens hooks (hook_scale, hook_normalized); computed in f32.</summary>
public sealed class Norm : nn.Module<Tensor, Tensor>
{
    private readonly TransformerConfig _cfg;
#pragma warning disable IDE1006 // TransformerLens parameter names
    public Parameter w;
    public Parameter? b;
#pragma warning restore IDE1006
    public HookPoint hook_scale = new("hook_scale");
    public HookPoint hook_normalized = new("hook_normalized");

    public Norm(string name, TransformerConfig cfg) : base(name)
    {
        _cfg = cfg;
        w = new Parameter(ones(cfg.DModel));
        b = cfg.Norm == NormKind.LayerNorm && cfg.NormBias ? new Parameter(zeros(cfg.DModel)) : null;
        RegisterComponents();
    }

    public NormKind Kind => _cfg.Norm;

    /// <summary>Norms and softmax compute in f32, or in f64 for f64 models.</summary>
    public static ScalarType Wide(ScalarType dtype) => dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;

    public override Tensor forward(Tensor x)
    {
        var dtype = x.dtype;
        if (_cfg.Norm == NormKind.LayerNorm && !hook_scale.HasHooks && !hook_normalized.HasHooks && Wide(dtype) == dtype)
        {
            // Nothing reads the statistics: libtorch's fused kernel (one pass forward, one backward node), the same
            // arithmetic as below to float rounding (biased variance, eps inside the square root).
            return F.layer_norm(x, [_cfg.DModel], w, b, _cfg.NormEps);
        }
        var h = x.to(Wide(dtype));
        if (_cfg.Norm == NormKind.LayerNorm)
        {
            h = h - h.mean([-1L], keepdim: true);
        }
        var scale = hook_scale.call(h.Squared().mean([-1L], keepdim: true).Plus(Scalars.Of(_cfg.NormEps)).sqrt());
        var normalized = hook_normalized.call(h / scale).to(dtype);
        var y = normalized * w;
        return b is null ? y : y.Plus(b);
    }
}

/// <summary>Attention in TransformerLens layout: W_Q [H,d,dh], W_K/W_V [Hkv,d,dh], W_O [H,dh,d].</summary>
public sealed class Attention : nn.Module
{
    private readonly TransformerConfig _cfg;
#pragma warning disable IDE1006
    public Parameter W_Q, W_K, W_V, W_O;
    public Parameter? b_Q, b_K, b_V, b_O;
#pragma warning restore IDE1006
    public HookPoint hook_q = new("hook_q"), hook_k = new("hook_k"), hook_v = new("hook_v");
    public HookPoint hook_rot_q = new("hook_rot_q"), hook_rot_k = new("hook_rot_k");
    public HookPoint hook_attn_scores = new("hook_attn_scores"), hook_pattern = new("hook_pattern");
    public HookPoint hook_z = new("hook_z"), hook_result = new("hook_result");

    /// <summary>An update added to a weight ("W_Q", "W_K", "W_V", "W_O") at each forward, or null (LoRA adapters, unmerged).</summary>
    public Func<string, Tensor?>? WeightDelta;

    private Tensor Weight(string name, Tensor w) => WeightDelta?.Invoke(name) is { } delta ? w.Plus(delta) : w;

    public Attention(string name, TransformerConfig cfg) : base(name)
    {
        _cfg = cfg;
        int d = cfg.DModel, h = cfg.NHeads, kv = cfg.KvHeads, dh = cfg.HeadDim;
        W_Q = new Parameter(empty(h, d, dh));
        W_K = new Parameter(empty(kv, d, dh));
        W_V = new Parameter(empty(kv, d, dh));
        W_O = new Parameter(empty(h, dh, d));
        if (cfg.QkvBias)
        {
            b_Q = new Parameter(zeros(h, dh));
            b_K = new Parameter(zeros(kv, dh));
            b_V = new Parameter(zeros(kv, dh));
        }
        if (cfg.AttnOutBias)
        {
            b_O = new Parameter(zeros(d));
        }
        RegisterComponents();
    }

    /// <summary>
    /// <paramref name="qIn"/>, <paramref name="kIn"/>, <paramref name="vIn"/>: the normalized residual each reads, either
    /// [B,T,d] shared by all heads or [B,T,H,d] per head (split inputs, for path patching and attribution).
    /// </summary>
    public Tensor Forward(Tensor qIn, Tensor kIn, Tensor vIn, Tensor positions, Tensor? keyMask, LayerKv? cache, bool useResult)
    {
        var q = hook_q.call(Project(qIn, Weight("W_Q", W_Q), b_Q, perHead: qIn.dim() == 4));
        var k = hook_k.call(Project(kIn, Weight("W_K", W_K), b_K, perHead: kIn.dim() == 4));
        var v = hook_v.call(Project(vIn, Weight("W_V", W_V), b_V, perHead: vIn.dim() == 4));
        if (_cfg.Positional == PositionalKind.Rotary)
        {
            q = hook_rot_q.call(Rotary.Apply(q, positions, _cfg.RotaryDims, _cfg.RotaryBase));
            k = hook_rot_k.call(Rotary.Apply(k, positions, _cfg.RotaryDims, _cfg.RotaryBase));
        }
        if (cache is not null)
        {
            (k, v) = cache.Append(k, v);
        }
        var group = q.shape[2] / k.shape[2];
        if (group > 1)
        {
            k = k.repeat_interleave(group, dim: 2);
            v = v.repeat_interleave(group, dim: 2);
        }
        long t = q.shape[1], s = k.shape[1];
        // Causal over absolute positions: query i (at s - t + i) sees keys 0..s - t + i; padded keys are masked.
        Tensor Allowed() => ones(t, s, dtype: ScalarType.Bool, device: q.device).tril(s - t).unsqueeze(0).unsqueeze(0)
            .logical_and(keyMask!.to(ScalarType.Bool).unsqueeze(1).unsqueeze(1));
        Tensor z;
        if (!hook_attn_scores.HasHooks && !hook_pattern.HasHooks && Norm.Wide(q.dtype) == q.dtype)
        {
            // Nobody reads the scores or the pattern: libtorch's fused attention (no [B,H,T,S] tensors kept for
            // backward). keyMask null means every key is real and t == s, so plain causal attention. Otherwise a −1e9
            // additive mask; a query with no visible key (left padding) then gets finite weights as below, though not
            // the same ones in float64, and its output is never read.
            var mask = keyMask is null ? null : zeros(keyMask.shape[0], 1, t, s, dtype: q.dtype, device: q.device).masked_fill(Allowed().logical_not(), Scalars.Of(-1e9));
            z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask: mask, is_casual: keyMask is null);
            z = hook_z.call(z.transpose(1, 2));
        }
        else
        {
            // Batched matmuls over views rather than einsum: no weight or activation permute copies on the hot path.
            var scores = matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)).div(Scalars.Of(Math.Sqrt(_cfg.HeadDim)));
            var allowed = keyMask is null ? ones(t, s, dtype: ScalarType.Bool, device: q.device).tril(s - t).unsqueeze(0).unsqueeze(0) : Allowed();
            scores = hook_attn_scores.call(scores.masked_fill(allowed.logical_not(), Scalars.Of(-1e9)));
            var pattern = hook_pattern.call(F.softmax(scores.to(Norm.Wide(q.dtype)), -1).to(q.dtype));
            z = hook_z.call(matmul(pattern, v.transpose(1, 2)).transpose(1, 2));
        }
        Tensor output;
        var wO = Weight("W_O", W_O);
        if (useResult)
        {
            var result = hook_result.call(matmul(z.transpose(1, 2), wO).transpose(1, 2));
            output = result.sum(2);
        }
        else
        {
            output = matmul(z.reshape(z.shape[0], z.shape[1], -1), wO.view(-1, wO.shape[2]));
        }
        return b_O is null ? output : output.Plus(b_O);
    }

    private static Tensor Project(Tensor x, Tensor w, Tensor? bias, bool perHead)
    {
        Tensor y;
        if (perHead)
        {
            // x: [B,T,H,d]. Under GQA, per-query-head k/v inputs use their group's kv weights.
            if (x.shape[2] != w.shape[0])
            {
                var group = x.shape[2] / w.shape[0];
                w = w.repeat_interleave(group, dim: 0);
                bias = bias?.repeat_interleave(group, dim: 0);
            }
            y = matmul(x.transpose(1, 2), w).transpose(1, 2);
        }
        else if (x.shape[1] >= 16)
        {
            // Many positions: one GEMM over the fused [d, H·dh] weight beats H small ones, despite the weight copy.
            y = matmul(x, w.permute(1, 0, 2).reshape(w.shape[1], -1)).view(x.shape[0], x.shape[1], w.shape[0], w.shape[2]);
        }
        else
        {
            // Decode steps: per-head GEMMs over views, no weight copy. The (few) rows broadcast over the heads, never
            // the weight over the batch: [1, B·T, d] × [H, d, dh] → [H, B·T, dh] (broadcasting [B, 1, T, d] against
            // the weight copied it once per sequence: 32 copies of each projection per step at batch 32).
            y = matmul(x.reshape(1, -1, x.shape[2]), w).view(w.shape[0], x.shape[0], x.shape[1], w.shape[2]).permute(1, 2, 0, 3);
        }
        return bias is null ? y : y.Plus(bias);
    }
}

/// <summary>Rotary position embedding in HF's rotate-half convention, on the first <c>dims</c> of each head.</summary>
public static class Rotary
{
    public static Tensor Apply(Tensor x, Tensor positions, int dims, double theta)
    {
        // x: [B,T,H,dh]; positions: [B,T]
        // inv_freq_i = theta^(-2i/dims), computed on the host in double (a handful of values).
        var inv = tensor(Enumerable.Range(0, dims / 2).Select(i => (float)Math.Pow(theta, -2.0 * i / dims)).ToArray(), device: x.device);
        var freqs = positions.to(ScalarType.Float32).unsqueeze(-1) * inv; // [B,T,dims/2]
        var emb = cat([freqs, freqs], -1).unsqueeze(2); // [B,T,1,dims]
        var cos = emb.cos().to(x.dtype);
        var sin = emb.sin().to(x.dtype);
        var rot = x[.., .., .., ..dims];
        var half = dims / 2;
        var rotated = cat([-rot[.., .., .., half..], rot[.., .., .., ..half]], -1);
        var y = (rot * cos).Plus(rotated * sin);
        return dims == x.shape[3] ? y : cat([y, x[.., .., .., dims..]], -1);
    }
}

/// <summary>The MLP: plain (W_in, act, W_out) or gated (act(x·W_gate) * x·W_in).</summary>
public sealed class Mlp : nn.Module<Tensor, Tensor>
{
    private readonly TransformerConfig _cfg;
#pragma warning disable IDE1006
    public Parameter W_in, W_out;
    public Parameter? W_gate, b_in, b_out;
#pragma warning restore IDE1006
    public HookPoint hook_pre = new("hook_pre"), hook_pre_linear = new("hook_pre_linear"), hook_post = new("hook_post");

    /// <summary>An update added to a weight ("W_in", "W_gate", "W_out") at each forward, or null (LoRA adapters, unmerged).</summary>
    public Func<string, Tensor?>? WeightDelta;

    private Tensor Weight(string name, Tensor w) => WeightDelta?.Invoke(name) is { } delta ? w.Plus(delta) : w;

    public Mlp(string name, TransformerConfig cfg) : base(name)
    {
        _cfg = cfg;
        W_in = new Parameter(empty(cfg.DModel, cfg.DMlp));
        W_out = new Parameter(empty(cfg.DMlp, cfg.DModel));
        if (cfg.GatedMlp)
        {
            W_gate = new Parameter(empty(cfg.DModel, cfg.DMlp));
        }
        if (cfg.MlpBias)
        {
            b_in = new Parameter(zeros(cfg.DMlp));
            b_out = new Parameter(zeros(cfg.DModel));
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        Tensor post;
        var wIn = Weight("W_in", W_in);
        if (W_gate is not null)
        {
            var gate = hook_pre.call(matmul(x, Weight("W_gate", W_gate)));
            var linear = hook_pre_linear.call(b_in is null ? matmul(x, wIn) : matmul(x, wIn).Plus(b_in));
            post = hook_post.call(Act(gate) * linear);
        }
        else
        {
            var pre = hook_pre.call(b_in is null ? matmul(x, wIn) : matmul(x, wIn).Plus(b_in));
            post = hook_post.call(Act(pre));
        }
        var y = matmul(post, Weight("W_out", W_out));
        return b_out is null ? y : y.Plus(b_out);
    }

    private Tensor Act(Tensor x) => _cfg.Act switch
    {
        // gelu_new is GELU's tanh approximation: libtorch's fused kernel computes the same formula in one pass.
        Activation.GeluNew => F.gelu(x, TorchSharp.Modules.GELU.Approximate.tanh),
        Activation.Gelu => F.gelu(x),
        Activation.Silu => F.silu(x),
        _ => F.relu(x),
    };
}
