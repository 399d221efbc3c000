using Pipelines.Models.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Diffusion;

/// <summary>The VAE's single-head spatial attention: GroupNorm, q/k/v/out with bias, residual.</summary>
public sealed class VaeAttention : nn.Module
{
#pragma warning disable IDE1006
    public readonly GNorm group_norm;
    public readonly DLinear to_q, to_k, to_v;
    public readonly ModuleList<nn.Module> to_out;
#pragma warning restore IDE1006
    private readonly DLinear _out;

    public VaeAttention(long channels, long groups) : base("attention")
    {
        group_norm = new GNorm(groups, channels, 1e-6);
        to_q = new DLinear(channels, channels);
        to_k = new DLinear(channels, channels);
        to_v = new DLinear(channels, channels);
        _out = new DLinear(channels, channels);
        to_out = new ModuleList<nn.Module>(_out, new Placeholder());
        register_module("group_norm", group_norm);
        register_module("to_q", to_q);
        register_module("to_k", to_k);
        register_module("to_v", to_v);
        register_module("to_out", to_out);
    }

    public Tensor Forward(Tensor x)
    {
        long b = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3];
        var tokens = group_norm.Forward(x).view(b, c, h * w).transpose(1, 2);
        var q = to_q.Forward(tokens).unsqueeze(1);
        var k = to_k.Forward(tokens).unsqueeze(1);
        var v = to_v.Forward(tokens).unsqueeze(1);
        var o = CrossAttention.Sdpa(q, k, v, false).squeeze(1);
        return _out.Forward(o).transpose(1, 2).reshape(b, c, h, w).Plus(x);
    }
}

/// <summary>UNetMidBlock2D of the VAE: resnet, attention, resnet (eps 1e-6, no time embedding).</summary>
public sealed class VaeMidBlock : nn.Module
{
#pragma warning disable IDE1006
    public readonly ModuleList<ResnetBlock2D> resnets;
    public readonly ModuleList<VaeAttention>? attentions;
#pragma warning restore IDE1006

    public VaeMidBlock(long channels, long groups, bool attention) : base("mid")
    {
        resnets = new ModuleList<ResnetBlock2D>(new ResnetBlock2D(channels, channels, null, groups, 1e-6), new ResnetBlock2D(channels, channels, null, groups, 1e-6));
        register_module("resnets", resnets);
        if (attention)
        {
            attentions = new ModuleList<VaeAttention>(new VaeAttention(channels, groups));
            register_module("attentions", attentions);
        }
    }

    public Tensor Forward(Tensor x)
    {
        x = resnets[0].Forward(x, null);
        if (attentions is not null)
        {
            x = attentions[0].Forward(x);
        }
        return resnets[1].Forward(x, null);
    }
}

/// <summary>DownEncoderBlock2D / UpDecoderBlock2D: resnets, then a down- or upsampler (not in the last block).</summary>
public sealed class VaeBlock : nn.Module
{
#pragma warning disable IDE1006
    public readonly ModuleList<ResnetBlock2D> resnets;
    public readonly ModuleList<Downsample2D>? downsamplers;
    public readonly ModuleList<Upsample2D>? upsamplers;
#pragma warning restore IDE1006

    public VaeBlock(long cin, long cout, int count, long groups, bool down, bool resample) : base("block")
    {
        resnets = new ModuleList<ResnetBlock2D>(Enumerable.Range(0, count).Select(j => new ResnetBlock2D(j == 0 ? cin : cout, cout, null, groups, 1e-6)).ToArray());
        register_module("resnets", resnets);
        if (resample && down)
        {
            downsamplers = new ModuleList<Downsample2D>(new Downsample2D(cout, true));
            register_module("downsamplers", downsamplers);
        }
        else if (resample)
        {
            upsamplers = new ModuleList<Upsample2D>(new Upsample2D(cout));
            register_module("upsamplers", upsamplers);
        }
    }

    public Tensor Forward(Tensor x)
    {
        foreach (var r in resnets)
        {
            x = r.Forward(x, null);
        }
        if (downsamplers is not null)
        {
            x = downsamplers[0].Forward(x);
        }
        if (upsamplers is not null)
        {
            x = upsamplers[0].Forward(x);
        }
        return x;
    }
}

/// <summary>The VAE encoder: conv_in, down blocks, mid block, GroupNorm, SiLU, conv_out (2 × latent channels).</summary>
public sealed class VaeEncoder : nn.Module
{
#pragma warning disable IDE1006
    public readonly DConv2d conv_in, conv_out;
    public readonly ModuleList<VaeBlock> down_blocks;
    public readonly VaeMidBlock mid_block;
    public readonly GNorm conv_norm_out;
#pragma warning restore IDE1006

    public VaeEncoder(VaeConfig c) : base("encoder")
    {
        var ch = c.BlockOutChannels;
        conv_in = new DConv2d(c.InChannels, ch[0], 3, padding: 1);
        down_blocks = new ModuleList<VaeBlock>(Enumerable.Range(0, ch.Length)
            .Select(i => new VaeBlock(i == 0 ? ch[0] : ch[i - 1], ch[i], c.LayersPerBlock, c.NormGroups, true, i < ch.Length - 1)).ToArray());
        mid_block = new VaeMidBlock(ch[^1], c.NormGroups, c.MidBlockAddAttention);
        conv_norm_out = new GNorm(c.NormGroups, ch[^1], 1e-6);
        conv_out = new DConv2d(ch[^1], 2 * c.LatentChannels, 3, padding: 1);
        register_module("conv_in", conv_in);
        register_module("down_blocks", down_blocks);
        register_module("mid_block", mid_block);
        register_module("conv_norm_out", conv_norm_out);
        register_module("conv_out", conv_out);
    }

    public Tensor Forward(Tensor x)
    {
        x = conv_in.Forward(x);
        foreach (var b in down_blocks)
        {
            x = b.Forward(x);
        }
        return conv_out.Forward(F.silu(conv_norm_out.Forward(mid_block.Forward(x))));
    }
}

/// <summary>The VAE decoder: conv_in, mid block, up blocks (L+1 resnets each), GroupNorm, SiLU, conv_out.</summary>
public sealed class VaeDecoder : nn.Module
{
#pragma warning disable IDE1006
    public readonly DConv2d conv_in, conv_out;
    public readonly ModuleList<VaeBlock> up_blocks;
    public readonly VaeMidBlock mid_block;
    public readonly GNorm conv_norm_out;
#pragma warning restore IDE1006

    public VaeDecoder(VaeConfig c) : base("decoder")
    {
        var rev = c.BlockOutChannels.Reverse().ToArray();
        conv_in = new DConv2d(c.LatentChannels, rev[0], 3, padding: 1);
        mid_block = new VaeMidBlock(rev[0], c.NormGroups, c.MidBlockAddAttention);
        up_blocks = new ModuleList<VaeBlock>(Enumerable.Range(0, rev.Length)
            .Select(i => new VaeBlock(i == 0 ? rev[0] : rev[i - 1], rev[i], c.LayersPerBlock + 1, c.NormGroups, false, i < rev.Length - 1)).ToArray());
        conv_norm_out = new GNorm(c.NormGroups, rev[^1], 1e-6);
        conv_out = new DConv2d(rev[^1], c.OutChannels, 3, padding: 1);
        register_module("conv_in", conv_in);
        register_module("mid_block", mid_block);
        register_module("up_blocks", up_blocks);
        register_module("conv_norm_out", conv_norm_out);
        register_module("conv_out", conv_out);
    }

    public Tensor Forward(Tensor z)
    {
        var x = mid_block.Forward(conv_in.Forward(z));
        foreach (var b in up_blocks)
        {
            x = b.Forward(x);
        }
        return conv_out.Forward(F.silu(conv_norm_out.Forward(x)));
    }
}

/// <summary>
/// diffusers' AutoencoderKL. <see cref="Decode"/> takes latents already divided by the scaling factor (as the
/// pipeline does before calling vae.decode); <see cref="EncodeMean"/> returns the posterior mean, unscaled.
/// </summary>
public sealed class AutoencoderKL : nn.Module
{
#pragma warning disable IDE1006
    public readonly VaeEncoder encoder;
    public readonly VaeDecoder decoder;
    public readonly DConv2d? quant_conv, post_quant_conv;
#pragma warning restore IDE1006

    public AutoencoderKL(VaeConfig config) : base("vae")
    {
        Config = config;
        encoder = new VaeEncoder(config);
        decoder = new VaeDecoder(config);
        register_module("encoder", encoder);
        register_module("decoder", decoder);
        if (config.UseQuantConv)
        {
            quant_conv = new DConv2d(2 * config.LatentChannels, 2 * config.LatentChannels, 1);
            register_module("quant_conv", quant_conv);
        }
        if (config.UsePostQuantConv)
        {
            post_quant_conv = new DConv2d(config.LatentChannels, config.LatentChannels, 1);
            register_module("post_quant_conv", post_quant_conv);
        }
    }

    public VaeConfig Config { get; }

    /// <summary>Image [B, 3, H, W] in [−1, 1] → (mean, logvar clamped to [−30, 20]), each [B, latent, H/2^k, W/2^k].</summary>
    public (Tensor Mean, Tensor LogVar) Encode(Tensor image)
    {
        var moments = encoder.Forward(image);
        if (quant_conv is not null)
        {
            moments = quant_conv.Forward(moments);
        }
        var parts = moments.chunk(2, 1);
        return (parts[0], parts[1].clamp(Scalars.Of(-30.0), Scalars.Of(20.0)));
    }

    public Tensor EncodeMean(Tensor image) => Encode(image).Mean;

    /// <summary>Unscaled latents [B, latent, h, w] → image [B, 3, h·2^k, w·2^k], roughly in [−1, 1].</summary>
    public Tensor Decode(Tensor z) => decoder.Forward(post_quant_conv is null ? z : post_quant_conv.Forward(z));
}
