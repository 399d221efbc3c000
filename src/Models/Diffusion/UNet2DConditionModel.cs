using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Diffusion;

/// <summary>
/// Hook points of a diffusion module, named by module path: every block's output (<c>down_blocks.1</c>,
/// <c>mid_block</c>, <c>up_blocks.0</c>), every attention's output (<c>…transformer_blocks.0.attn2</c>) and its
/// probabilities (<c>…attn2.hook_pattern</c>, [B, heads, queries, keys]). Unhooked points cost nothing; a hooked
/// pattern switches that attention from the fused kernel to an explicit softmax.
/// </summary>
public sealed class HookRegistry
{
    private readonly Dictionary<string, HookPoint> _points = new(StringComparer.Ordinal);

    public HookPoint Point(string name)
    {
        if (!_points.TryGetValue(name, out var p))
        {
            p = new HookPoint(name) { Name = name };
            _points[name] = p;
        }
        return p;
    }

    public IReadOnlyCollection<string> Names => _points.Keys;

    /// <summary>A hook on a named point; dispose to remove. Unknown names fail with the list's first entries.</summary>
    public IDisposable Add(string name, Func<Tensor, HookPoint, Tensor?> hook) =>
        _points.TryGetValue(name, out var p) ? p.Add(hook)
            : throw new ArgumentException($"no hook point \"{name}\" (for example: {string.Join(", ", _points.Keys.Take(6))})");

    public void ClearAll()
    {
        foreach (var p in _points.Values)
        {
            p.Clear();
        }
    }

    internal Tensor Run(string name, Tensor x) => _points[name].HasHooks ? _points[name].forward(x) : x;
}

/// <summary>diffusers' ResnetBlock2D (with a time-embedding projection in the UNet, without in the VAE).</summary>
public sealed class ResnetBlock2D : nn.Module
{
#pragma warning disable IDE1006
    public readonly GNorm norm1, norm2;
    public readonly DConv2d conv1, conv2;
    public readonly DLinear? time_emb_proj;
    public readonly DConv2d? conv_shortcut;
#pragma warning restore IDE1006

    public ResnetBlock2D(long cin, long cout, long? tembChannels, long groups, double eps) : base("resnet")
    {
        norm1 = new GNorm(groups, cin, eps);
        conv1 = new DConv2d(cin, cout, 3, padding: 1);
        norm2 = new GNorm(groups, cout, eps);
        conv2 = new DConv2d(cout, cout, 3, padding: 1);
        register_module("norm1", norm1);
        register_module("conv1", conv1);
        if (tembChannels is { } t)
        {
            time_emb_proj = new DLinear(t, cout);
            register_module("time_emb_proj", time_emb_proj);
        }
        register_module("norm2", norm2);
        register_module("conv2", conv2);
        if (cin != cout)
        {
            conv_shortcut = new DConv2d(cin, cout, 1);
            register_module("conv_shortcut", conv_shortcut);
        }
    }

    public Tensor Forward(Tensor x, Tensor? temb)
    {
        var h = conv1.Forward(F.silu(norm1.Forward(x)));
        if (time_emb_proj is not null && temb is not null)
        {
            h = h.Plus(time_emb_proj.Forward(F.silu(temb)).unsqueeze(-1).unsqueeze(-1));
        }
        h = conv2.Forward(F.silu(norm2.Forward(h)));
        return (conv_shortcut is null ? x : conv_shortcut.Forward(x)).Plus(h);
    }
}

/// <summary>diffusers' Attention (AttnProcessor2_0) as the UNet uses it: q from the image tokens, k/v from the context.</summary>
public sealed class CrossAttention : nn.Module
{
#pragma warning disable IDE1006
    public readonly DLinear to_q, to_k, to_v;
    public readonly ModuleList<nn.Module> to_out;
#pragma warning restore IDE1006
    private readonly DLinear _out;
    private readonly int _heads;
    private readonly HookRegistry _hooks;

    public CrossAttention(string path, HookRegistry hooks, long dim, long contextDim, int heads, bool bias) : base("attention")
    {
        Path = path;
        _hooks = hooks;
        _heads = heads;
        to_q = new DLinear(dim, dim, bias);
        to_k = new DLinear(contextDim, dim, bias);
        to_v = new DLinear(contextDim, dim, bias);
        _out = new DLinear(dim, dim, true);
        to_out = new ModuleList<nn.Module>(_out, new Placeholder());
        register_module("to_q", to_q);
        register_module("to_k", to_k);
        register_module("to_v", to_v);
        register_module("to_out", to_out);
        hooks.Point(path);
        hooks.Point(path + ".hook_pattern");
    }

    /// <summary>The module path, e.g. <c>down_blocks.0.attentions.0.transformer_blocks.0.attn2</c>.</summary>
    public string Path { get; }

    public int Heads => _heads;

    /// <summary>x [B, N, C]; context [B, S, D] (null: self-attention).</summary>
    public Tensor Forward(Tensor x, Tensor? context)
    {
        var ctx = context ?? x;
        var q = to_q.Forward(x);
        var k = to_k.Forward(ctx);
        var v = to_v.Forward(ctx);
        var o = Attend(q, k, v, _heads, _hooks, Path + ".hook_pattern");
        return _hooks.Run(Path, _out.Forward(o));
    }

    /// <summary>softmax(q kᵀ/√d) v per head over [B, N, C] tensors; explicit when the pattern is hooked, fused otherwise.</summary>
    internal static Tensor Attend(Tensor q, Tensor k, Tensor v, int heads, HookRegistry hooks, string patternHook)
    {
        long b = q.shape[0], n = q.shape[1], s = k.shape[1], c = q.shape[2], d = c / heads;
        var qh = q.view(b, n, heads, d).transpose(1, 2);
        var kh = k.view(b, s, heads, d).transpose(1, 2);
        var vh = v.view(b, s, heads, d).transpose(1, 2);
        MacCounter.Add(2 * b * heads * n * s * d);
        Tensor o;
        if (hooks.Point(patternHook).HasHooks)
        {
            var scores = matmul(qh, kh.transpose(-1, -2)).mul(Scalars.Of(1.0 / Math.Sqrt(d)));
            var pattern = hooks.Run(patternHook, scores.softmax(-1));
            o = matmul(pattern, vh);
        }
        else
        {
            o = Sdpa(qh, kh, vh, false);
        }
        return o.transpose(1, 2).reshape(b, n, c);
    }

    /// <summary>
    /// softmax(q kᵀ/√d) v over [B, H, N, d]: libtorch's fused kernel for inference; under autograd an explicit softmax,
    /// because the CPU kernel's backward intermittently returned NaN gradients here (measured: the toy's first update).
    /// </summary>
    internal static Tensor Sdpa(Tensor q, Tensor k, Tensor v, bool causal)
    {
        if (!(is_grad_enabled() && (q.requires_grad || k.requires_grad || v.requires_grad)))
        {
            return F.scaled_dot_product_attention(q, k, v, is_casual: causal);
        }
        var scores = matmul(q, k.transpose(-1, -2)).mul(Scalars.Of(1.0 / Math.Sqrt(q.shape[^1])));
        if (causal)
        {
            long n = q.shape[^2], s = k.shape[^2];
            using var mask = ones(n, s, ScalarType.Bool).triu(1);
            scores = scores.masked_fill(mask, Scalars.Of(double.NegativeInfinity));
        }
        return matmul(scores.softmax(-1), v);
    }
}

/// <summary>GEGLU: the projection's first half times gelu(second half).</summary>
public sealed class Geglu : nn.Module
{
#pragma warning disable IDE1006
    public readonly DLinear proj;
#pragma warning restore IDE1006

    public Geglu(long dim, long inner) : base("geglu")
    {
        proj = new DLinear(dim, 2 * inner);
        register_module("proj", proj);
    }

    public Tensor Forward(Tensor x)
    {
        var parts = proj.Forward(x).chunk(2, -1);
        return parts[0] * F.gelu(parts[1]);
    }
}

/// <summary>FeedForward: net.0 GEGLU, net.1 Dropout, net.2 Linear.</summary>
public sealed class FeedForward : nn.Module
{
#pragma warning disable IDE1006
    public readonly ModuleList<nn.Module> net;
#pragma warning restore IDE1006
    private readonly Geglu _in;
    private readonly DLinear _out;

    public FeedForward(long dim) : base("ff")
    {
        _in = new Geglu(dim, 4 * dim);
        _out = new DLinear(4 * dim, dim);
        net = new ModuleList<nn.Module>(_in, new Placeholder(), _out);
        register_module("net", net);
    }

    public Tensor Forward(Tensor x) => _out.Forward(_in.Forward(x));
}

/// <summary>BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-LayerNorm with a residual.</summary>
public sealed class BasicTransformerBlock : nn.Module
{
#pragma warning disable IDE1006
    public readonly LNorm norm1, norm2, norm3;
    public readonly CrossAttention attn1, attn2;
    public readonly FeedForward ff;
#pragma warning restore IDE1006

    public BasicTransformerBlock(string path, HookRegistry hooks, long dim, long contextDim, int heads) : base("block")
    {
        norm1 = new LNorm(dim, 1e-5);
        attn1 = new CrossAttention(path + ".attn1", hooks, dim, dim, heads, false);
        norm2 = new LNorm(dim, 1e-5);
        attn2 = new CrossAttention(path + ".attn2", hooks, dim, contextDim, heads, false);
        norm3 = new LNorm(dim, 1e-5);
        ff = new FeedForward(dim);
        register_module("norm1", norm1);
        register_module("attn1", attn1);
        register_module("norm2", norm2);
        register_module("attn2", attn2);
        register_module("norm3", norm3);
        register_module("ff", ff);
    }

    public Tensor Forward(Tensor h, Tensor context)
    {
        h = h.Plus(attn1.Forward(norm1.Forward(h), null));
        h = h.Plus(attn2.Forward(norm2.Forward(h), context));
        return h.Plus(ff.Forward(norm3.Forward(h)));
    }
}

/// <summary>Transformer2DModel (continuous input): GroupNorm (eps 1e-6), proj_in, one block, proj_out, residual.</summary>
public sealed class Transformer2DModel : nn.Module
{
#pragma warning disable IDE1006
    public readonly GNorm norm;
    public readonly nn.Module proj_in, proj_out;
    public readonly ModuleList<BasicTransformerBlock> transformer_blocks;
#pragma warning restore IDE1006
    private readonly bool _linear;

    public Transformer2DModel(string path, HookRegistry hooks, long channels, long contextDim, int heads, long groups, bool linearProjection) : base("transformer")
    {
        _linear = linearProjection;
        norm = new GNorm(groups, channels, 1e-6);
        proj_in = linearProjection ? new DLinear(channels, channels) : new DConv2d(channels, channels, 1);
        transformer_blocks = new ModuleList<BasicTransformerBlock>(new BasicTransformerBlock(path + ".transformer_blocks.0", hooks, channels, contextDim, heads));
        proj_out = linearProjection ? new DLinear(channels, channels) : new DConv2d(channels, channels, 1);
        register_module("norm", norm);
        register_module("proj_in", proj_in);
        register_module("transformer_blocks", transformer_blocks);
        register_module("proj_out", proj_out);
    }

    public Tensor Forward(Tensor x, Tensor context)
    {
        long b = x.shape[0], c = x.shape[1], hh = x.shape[2], ww = x.shape[3];
        var h = norm.Forward(x);
        if (_linear)
        {
            h = ((DLinear)proj_in).Forward(h.permute(0, 2, 3, 1).reshape(b, hh * ww, c));
        }
        else
        {
            h = ((DConv2d)proj_in).Forward(h).permute(0, 2, 3, 1).reshape(b, hh * ww, c);
        }
        foreach (var block in transformer_blocks)
        {
            h = block.Forward(h, context);
        }
        if (_linear)
        {
            h = ((DLinear)proj_out).Forward(h).reshape(b, hh, ww, c).permute(0, 3, 1, 2);
        }
        else
        {
            h = ((DConv2d)proj_out).Forward(h.reshape(b, hh, ww, c).permute(0, 3, 1, 2).contiguous());
        }
        return h.Plus(x);
    }
}

/// <summary>Downsample2D: a stride-2 3×3 conv, padding 1 (UNet) or an explicit (0,1,0,1) pad then padding 0 (VAE encoder).</summary>
public sealed class Downsample2D : nn.Module
{
#pragma warning disable IDE1006
    public readonly DConv2d conv;
#pragma warning restore IDE1006
    private readonly bool _asymmetric;

    public Downsample2D(long channels, bool asymmetricPad) : base("downsample")
    {
        _asymmetric = asymmetricPad;
        conv = new DConv2d(channels, channels, 3, stride: 2, padding: asymmetricPad ? 0 : 1);
        register_module("conv", conv);
    }

    public Tensor Forward(Tensor x) => conv.Forward(_asymmetric ? F.pad(x, [0, 1, 0, 1]) : x);
}

/// <summary>Upsample2D: nearest-neighbour to the given size (×2 when none), then a 3×3 conv.</summary>
public sealed class Upsample2D : nn.Module
{
#pragma warning disable IDE1006
    public readonly DConv2d conv;
#pragma warning restore IDE1006

    public Upsample2D(long channels) : base("upsample")
    {
        conv = new DConv2d(channels, channels, 3, padding: 1);
        register_module("conv", conv);
    }

    public Tensor Forward(Tensor x, long[]? size = null) =>
        conv.Forward(F.interpolate(x, size: size ?? [x.shape[2] * 2, x.shape[3] * 2], mode: InterpolationMode.Nearest));
}

/// <summary>CrossAttnDownBlock2D / DownBlock2D (attentions null).</summary>
public sealed class UNetDownBlock : nn.Module
{
#pragma warning disable IDE1006
    public readonly ModuleList<ResnetBlock2D> resnets;
    public readonly ModuleList<Transformer2DModel>? attentions;
    public readonly ModuleList<Downsample2D>? downsamplers;
#pragma warning restore IDE1006

    public UNetDownBlock(string path, HookRegistry hooks, UNetConfig c, int index) : base("down")
    {
        long cin = index == 0 ? c.BlockOutChannels[0] : c.BlockOutChannels[index - 1], cout = c.BlockOutChannels[index];
        var cross = c.DownBlockTypes[index] == "CrossAttnDownBlock2D";
        resnets = new ModuleList<ResnetBlock2D>(Enumerable.Range(0, c.LayersPerBlock)
            .Select(j => new ResnetBlock2D(j == 0 ? cin : cout, cout, c.TimeEmbedDim, c.NormGroups, c.NormEps)).ToArray());
        register_module("resnets", resnets);
        if (cross)
        {
            attentions = new ModuleList<Transformer2DModel>(Enumerable.Range(0, c.LayersPerBlock)
                .Select(j => new Transformer2DModel($"{path}.attentions.{j}", hooks, cout, c.CrossAttentionDim, c.Heads[index], c.NormGroups, c.UseLinearProjection)).ToArray());
            register_module("attentions", attentions);
        }
        if (index < c.BlockOutChannels.Length - 1)
        {
            downsamplers = new ModuleList<Downsample2D>(new Downsample2D(cout, false));
            register_module("downsamplers", downsamplers);
        }
    }
}

/// <summary>UNetMidBlock2DCrossAttn: resnet, cross-attention transformer, resnet.</summary>
public sealed class UNetMidBlock : nn.Module
{
#pragma warning disable IDE1006
    public readonly ModuleList<ResnetBlock2D> resnets;
    public readonly ModuleList<Transformer2DModel> attentions;
#pragma warning restore IDE1006

    public UNetMidBlock(HookRegistry hooks, UNetConfig c) : base("mid")
    {
        long ch = c.BlockOutChannels[^1];
        resnets = new ModuleList<ResnetBlock2D>(new ResnetBlock2D(ch, ch, c.TimeEmbedDim, c.NormGroups, c.NormEps), new ResnetBlock2D(ch, ch, c.TimeEmbedDim, c.NormGroups, c.NormEps));
        attentions = new ModuleList<Transformer2DModel>(new Transformer2DModel("mid_block.attentions.0", hooks, ch, c.CrossAttentionDim, c.Heads[^1], c.NormGroups, c.UseLinearProjection));
        register_module("attentions", attentions);
        register_module("resnets", resnets);
    }

    public Tensor Forward(Tensor x, Tensor emb, Tensor context) =>
        resnets[1].Forward(attentions[0].Forward(resnets[0].Forward(x, emb), context), emb);
}

/// <summary>CrossAttnUpBlock2D / UpBlock2D: L+1 resnets over concatenated skips.</summary>
public sealed class UNetUpBlock : nn.Module
{
#pragma warning disable IDE1006
    public readonly ModuleList<ResnetBlock2D> resnets;
    public readonly ModuleList<Transformer2DModel>? attentions;
    public readonly ModuleList<Upsample2D>? upsamplers;
#pragma warning restore IDE1006

    public UNetUpBlock(string path, HookRegistry hooks, UNetConfig c, int index) : base("up")
    {
        var rev = c.BlockOutChannels.Reverse().Select(x => (long)x).ToArray();
        var n = rev.Length;
        long cout = rev[index], prev = rev[Math.Max(index - 1, 0)], inp = rev[Math.Min(index + 1, n - 1)];
        var heads = c.Heads.Reverse().ToArray()[index];
        var l = c.LayersPerBlock;
        resnets = new ModuleList<ResnetBlock2D>(Enumerable.Range(0, l + 1)
            .Select(j => new ResnetBlock2D((j == 0 ? prev : cout) + (j == l ? inp : cout), cout, c.TimeEmbedDim, c.NormGroups, c.NormEps)).ToArray());
        register_module("resnets", resnets);
        if (c.UpBlockTypes[index] == "CrossAttnUpBlock2D")
        {
            attentions = new ModuleList<Transformer2DModel>(Enumerable.Range(0, l + 1)
                .Select(j => new Transformer2DModel($"{path}.attentions.{j}", hooks, cout, c.CrossAttentionDim, heads, c.NormGroups, c.UseLinearProjection)).ToArray());
            register_module("attentions", attentions);
        }
        if (index < n - 1)
        {
            upsamplers = new ModuleList<Upsample2D>(new Upsample2D(cout));
            register_module("upsamplers", upsamplers);
        }
    }
}

/// <summary>
/// diffusers' UNet2DConditionModel (SD 1.x/2.x family), config-driven, with diffusers' key names so its state dict is
/// the checkpoint's. ε = Forward(x_t, t, context); t may be fractional (Euler, LMS) and a scalar or one per row; sides
/// need not be multiples of 2^(blocks−1) (each upsampler meets its skip's size, as diffusers' forward_upsample_size).
/// </summary>
public sealed class UNet2DConditionModel : nn.Module
{
#pragma warning disable IDE1006
    public readonly DConv2d conv_in, conv_out;
    public readonly TimestepEmbedding time_embedding;
    public readonly ModuleList<UNetDownBlock> down_blocks;
    public readonly UNetMidBlock mid_block;
    public readonly ModuleList<UNetUpBlock> up_blocks;
    public readonly GNorm conv_norm_out;
#pragma warning restore IDE1006

    public UNet2DConditionModel(UNetConfig config) : base("unet")
    {
        Config = config;
        var c0 = config.BlockOutChannels[0];
        conv_in = new DConv2d(config.InChannels, c0, 3, padding: 1);
        time_embedding = new TimestepEmbedding(c0, config.TimeEmbedDim);
        down_blocks = new ModuleList<UNetDownBlock>(Enumerable.Range(0, config.BlockOutChannels.Length).Select(i => new UNetDownBlock($"down_blocks.{i}", Hooks, config, i)).ToArray());
        mid_block = new UNetMidBlock(Hooks, config);
        up_blocks = new ModuleList<UNetUpBlock>(Enumerable.Range(0, config.BlockOutChannels.Length).Select(i => new UNetUpBlock($"up_blocks.{i}", Hooks, config, i)).ToArray());
        conv_norm_out = new GNorm(config.NormGroups, c0, config.NormEps);
        conv_out = new DConv2d(c0, config.OutChannels, 3, padding: 1);
        register_module("conv_in", conv_in);
        register_module("time_embedding", time_embedding);
        register_module("down_blocks", down_blocks);
        register_module("mid_block", mid_block);
        register_module("up_blocks", up_blocks);
        register_module("conv_norm_out", conv_norm_out);
        register_module("conv_out", conv_out);
        for (var i = 0; i < config.BlockOutChannels.Length; i++)
        {
            Hooks.Point($"down_blocks.{i}");
            Hooks.Point($"up_blocks.{i}");
        }
        Hooks.Point("mid_block");
    }

    public UNetConfig Config { get; }

    public HookRegistry Hooks { get; } = new();

    /// <summary>sample [B, C, H, W]; timestep a 0-dim or [B] tensor (any numeric dtype); context [B, S, D].</summary>
    public Tensor Forward(Tensor sample, Tensor timestep, Tensor context)
    {
        var b = sample.shape[0];
        var t = timestep.to(ScalarType.Float32).flatten();
        if (t.shape[0] == 1 && b > 1)
        {
            t = t.expand(b);
        }
        var emb = time_embedding.Forward(TimestepEmbedding.Sinusoidal(t, Config.BlockOutChannels[0], Config.FlipSinToCos, Config.FreqShift).to(sample.dtype));
        var x = conv_in.Forward(sample);
        var skips = new List<Tensor> { x };
        for (var i = 0; i < down_blocks.Count; i++)
        {
            var block = down_blocks[i];
            for (var j = 0; j < block.resnets.Count; j++)
            {
                x = block.resnets[j].Forward(x, emb);
                if (block.attentions is not null)
                {
                    x = block.attentions[j].Forward(x, context);
                }
                skips.Add(x);
            }
            if (block.downsamplers is not null)
            {
                x = block.downsamplers[0].Forward(x);
                skips.Add(x);
            }
            x = Hooks.Run($"down_blocks.{i}", x);
        }
        x = Hooks.Run("mid_block", mid_block.Forward(x, emb, context));
        for (var i = 0; i < up_blocks.Count; i++)
        {
            var block = up_blocks[i];
            for (var j = 0; j < block.resnets.Count; j++)
            {
                var skip = skips[^1];
                skips.RemoveAt(skips.Count - 1);
                x = block.resnets[j].Forward(cat([x, skip], 1), emb);
                if (block.attentions is not null)
                {
                    x = block.attentions[j].Forward(x, context);
                }
            }
            if (block.upsamplers is not null)
            {
                x = block.upsamplers[0].Forward(x, [skips[^1].shape[2], skips[^1].shape[3]]);
            }
            x = Hooks.Run($"up_blocks.{i}", x);
        }
        return conv_out.Forward(F.silu(conv_norm_out.Forward(x)));
    }

    /// <summary>Every attention module (attn1 self, attn2 cross), with its path.</summary>
    public IEnumerable<CrossAttention> Attentions() => modules().OfType<CrossAttention>();
}

/// <summary>TimestepEmbedding: linear_1 → SiLU → linear_2 over the sinusoidal projection.</summary>
public sealed class TimestepEmbedding : nn.Module
{
#pragma warning disable IDE1006
    public readonly DLinear linear_1, linear_2;
#pragma warning restore IDE1006

    public TimestepEmbedding(long c0, long dim) : base("time_embedding")
    {
        linear_1 = new DLinear(c0, dim);
        linear_2 = new DLinear(dim, dim);
        register_module("linear_1", linear_1);
        register_module("linear_2", linear_2);
    }

    public Tensor Forward(Tensor e) => linear_2.Forward(F.silu(linear_1.Forward(e)));

    /// <summary>diffusers' get_timestep_embedding: f_k = exp(−ln 10⁴·k/(dim/2 − shift)); [sin, cos], flipped to [cos, sin].</summary>
    public static Tensor Sinusoidal(Tensor t, long dim, bool flipSinToCos, int freqShift)
    {
        var half = dim / 2;
        var exponent = Scalars.Range(half, ScalarType.Float32).mul(Scalars.Of(-Math.Log(10000.0) / (half - freqShift)));
        var args = t.to(ScalarType.Float32).unsqueeze(1) * exponent.exp().unsqueeze(0);
        var emb = flipSinToCos ? cat([args.cos(), args.sin()], 1) : cat([args.sin(), args.cos()], 1);
        return dim % 2 == 1 ? F.pad(emb, [0, 1]) : emb;
    }
}
