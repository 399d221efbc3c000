using Pipelines.Models.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Diffusion;

/// <summary>
/// A low-rank update attached to one <see cref="DLinear"/> or <see cref="DConv2d"/>: <c>down</c> [r, in(, kh, kw)],
/// <c>up</c> [out, r(, 1, 1)], added as <c>multiplier · scale · up(down(x))</c> at each forward. The pair belongs to a
/// <see cref="UNetLora"/> (its own state dict); the layer keeps only a reference, so the UNet's weights stay pure.
/// </summary>
public sealed class LoraSlot(Parameter down, Parameter up, double scale, Func<double> multiplier)
{
    public Parameter Down { get; } = down;
    public Parameter Up { get; } = up;
    public double Scale { get; } = scale;
    public Func<double> Multiplier { get; } = multiplier;
}

/// <summary>
/// Counts multiply-accumulates of the linear, conv and attention products on this thread while a count is open (the
/// bench's FLOP figures; off, it costs one null check).
/// </summary>
public static class MacCounter
{
    [ThreadStatic]
    private static long[]? _count;

    public static bool Active => _count is not null;

    internal static void Add(long macs)
    {
        if (_count is not null)
        {
            _count[0] += macs;
        }
    }

    /// <summary>Runs an action and returns the MACs it performed.</summary>
    public static long Measure(Action action)
    {
        _count = [0];
        try
        {
            action();
            return _count[0];
        }
        finally
        {
            _count = null;
        }
    }
}

/// <summary>nn.Linear with diffusers' parameter names (<c>weight</c>, <c>bias</c>) and optional LoRA slots.</summary>
public sealed class DLinear : nn.Module
{
#pragma warning disable IDE1006 // diffusers' names
    public readonly Parameter weight;
    public readonly Parameter? bias;
#pragma warning restore IDE1006
    internal readonly List<LoraSlot> Lora = [];

    public DLinear(long inFeatures, long outFeatures, bool hasBias = true) : base("linear")
    {
        weight = new Parameter(empty(outFeatures, inFeatures));
        register_parameter("weight", weight);
        if (hasBias)
        {
            bias = new Parameter(zeros(outFeatures));
            register_parameter("bias", bias);
        }
    }

    public long In => weight.shape[1];
    public long Out => weight.shape[0];

    public Tensor Forward(Tensor x)
    {
        var y = F.linear(x, weight, bias);
        MacCounter.Add(x.numel() / In * In * Out);
        foreach (var slot in Lora)
        {
            var m = slot.Multiplier();
            if (m != 0)
            {
                y = y.Plus(F.linear(F.linear(x, slot.Down), slot.Up).mul(Scalars.Of(m * slot.Scale)));
            }
        }
        return y;
    }
}

/// <summary>nn.Conv2d (square kernel, symmetric padding) with diffusers' parameter names and optional LoRA slots.</summary>
public sealed class DConv2d : nn.Module
{
#pragma warning disable IDE1006
    public readonly Parameter weight;
    public readonly Parameter? bias;
#pragma warning restore IDE1006
    internal readonly List<LoraSlot> Lora = [];
    private readonly long _stride, _padding;

    public DConv2d(long inChannels, long outChannels, long kernel, long stride = 1, long padding = 0, bool hasBias = true) : base("conv")
    {
        _stride = stride;
        _padding = padding;
        weight = new Parameter(empty(outChannels, inChannels, kernel, kernel));
        register_parameter("weight", weight);
        if (hasBias)
        {
            bias = new Parameter(zeros(outChannels));
            register_parameter("bias", bias);
        }
    }

    public long In => weight.shape[1];
    public long Out => weight.shape[0];
    public long Kernel => weight.shape[2];

    /// <summary>
    /// conv2d with a workaround: libtorch 2.10's CPU backward returns a wrong (sometimes NaN) input gradient for stride-1
    /// k×k convolutions (k &gt; 1) whose output-channel count is not a multiple of 16 (measured against im2col and finite
    /// differences: the UNet's 3- or 4-channel conv_out, rank-r LoRA convs). Under autograd such a weight is padded with
    /// zero output channels to the next multiple of 16 and the result sliced back, which is exact.
    /// </summary>
    public static Tensor Conv(Tensor x, Tensor w, Tensor? b, long stride, long padding)
    {
        var outC = w.shape[0];
        if (stride == 1 && w.shape[2] > 1 && outC % 16 != 0 && x.requires_grad && is_grad_enabled())
        {
            var extra = 16 - outC % 16;
            var wp = F.pad(w, [0, 0, 0, 0, 0, 0, 0, extra]);
            var bp = b is null ? null : F.pad(b, [0, extra]);
            return F.conv2d(x, wp, bp, strides: [stride, stride], padding: [padding, padding]).narrow(1, 0, outC);
        }
        return F.conv2d(x, w, b, strides: [stride, stride], padding: [padding, padding]);
    }

    public Tensor Forward(Tensor x)
    {
        var y = Conv(x, weight, bias, _stride, _padding);
        MacCounter.Add(y.numel() * In * Kernel * Kernel);
        foreach (var slot in Lora)
        {
            var m = slot.Multiplier();
            if (m != 0)
            {
                var h = Conv(x, slot.Down, null, _stride, _padding);
                y = y.Plus(F.conv2d(h, slot.Up).mul(Scalars.Of(m * slot.Scale)));
            }
        }
        return y;
    }
}

/// <summary>GroupNorm with affine <c>weight</c>/<c>bias</c> and a per-module epsilon (1e-5 in ResNets, 1e-6 elsewhere).</summary>
public sealed class GNorm : nn.Module
{
#pragma warning disable IDE1006
    public readonly Parameter weight, bias;
#pragma warning restore IDE1006
    private readonly long _groups;
    private readonly double _eps;

    public GNorm(long groups, long channels, double eps) : base("group_norm")
    {
        _groups = groups;
        _eps = eps;
        weight = new Parameter(ones(channels));
        bias = new Parameter(zeros(channels));
        register_parameter("weight", weight);
        register_parameter("bias", bias);
    }

    public Tensor Forward(Tensor x) => F.group_norm(x, _groups, weight, bias, _eps);
}

/// <summary>LayerNorm over the last dimension with <c>weight</c>/<c>bias</c>.</summary>
public sealed class LNorm : nn.Module
{
#pragma warning disable IDE1006
    public readonly Parameter weight, bias;
#pragma warning restore IDE1006
    private readonly double _eps;

    public LNorm(long dim, double eps) : base("layer_norm")
    {
        _eps = eps;
        weight = new Parameter(ones(dim));
        bias = new Parameter(zeros(dim));
        register_parameter("weight", weight);
        register_parameter("bias", bias);
    }

    public Tensor Forward(Tensor x) => F.layer_norm(x, [weight.shape[0]], weight, bias, _eps);
}

/// <summary>An embedding table named <c>weight</c>.</summary>
public sealed class Embed : nn.Module
{
#pragma warning disable IDE1006
    public readonly Parameter weight;
#pragma warning restore IDE1006

    public Embed(long count, long dim) : base("embedding")
    {
        weight = new Parameter(empty(count, dim));
        register_parameter("weight", weight);
    }
}

/// <summary>A parameter-free placeholder where diffusers has a Dropout, so the next module keeps its index.</summary>
public sealed class Placeholder() : nn.Module("dropout");

/// <summary>Shared weight initialisation for freshly built diffusion modules (random checkpoints, toy training).</summary>
public static class DiffusionInit
{
    /// <summary>
    /// PyTorch's default init, seeded: weights and biases of linear/conv layers uniform in ±1/√fan_in, norms at
    /// weight 1 and bias 0, embeddings N(0, 0.02).
    /// </summary>
    public static void Reset(nn.Module module, long seed)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var generator = new Generator((ulong)seed);
        foreach (var (name, child) in module.named_modules())
        {
            switch (child)
            {
                case DLinear l:
                    Uniform(l.weight, l.In, generator);
                    if (l.bias is not null)
                    {
                        Uniform(l.bias, l.In, generator);
                    }
                    break;
                case DConv2d c:
                    Uniform(c.weight, c.In * c.Kernel * c.Kernel, generator);
                    if (c.bias is not null)
                    {
                        Uniform(c.bias, c.In * c.Kernel * c.Kernel, generator);
                    }
                    break;
                case Embed e:
                    e.weight.copy_(randn(e.weight.shape, generator: generator).mul_(Scalars.Of(0.02)));
                    break;
            }
        }
    }

    private static void Uniform(Tensor p, long fanIn, Generator generator)
    {
        var bound = 1.0 / Math.Sqrt(fanIn);
        p.copy_(rand(p.shape, generator: generator).mul_(Scalars.Of(2 * bound)).sub_(Scalars.Of(bound)));
    }
}
