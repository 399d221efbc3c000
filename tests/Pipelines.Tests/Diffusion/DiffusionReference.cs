using Pipelines.Models.Runtime;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Tests.Diffusion;

/// <summary>
/// An independent forward of the UNet, VAE decoder/encoder and CLIP text encoder, written from research diffusion.md
/// §1.4, §1.5 and §1.7 as plain functions over a state dict (key → tensor): no runtime module, no shared helper. The
/// attention here is an explicit softmax (the runtime uses the fused kernel), the up path counts skips by the spec's
/// channel rule, and the timestep embedding follows the formula. Tests compare it with the runtime to 1e-4 of scale.
/// </summary>
internal sealed class DiffusionReference(Dictionary<string, Tensor> w)
{
    private Tensor W(string k) => w.TryGetValue(k, out var t) ? t : throw new KeyNotFoundException(k);
    private Tensor? B(string k) => w.TryGetValue(k, out var t) ? t : null;

    private Tensor Conv(Tensor x, string p, long stride = 1, long pad = -1)
    {
        var weight = W(p + ".weight");
        var k = weight.shape[2];
        var padding = pad >= 0 ? pad : k / 2;
        return F.conv2d(x, weight, B(p + ".bias"), strides: [stride, stride], padding: [padding, padding]);
    }

    private Tensor Lin(Tensor x, string p) => matmul(x, W(p + ".weight").t()).Plus(B(p + ".bias") is { } b ? b : zeros(1));

    private Tensor Gn(Tensor x, string p, double eps, long groups = 32)
    {
        long b = x.shape[0], c = x.shape[1];
        var g = x.reshape(b, groups, -1);
        var mean = g.mean([2L], keepdim: true);
        var variance = (g - mean).Squared().mean([2L], keepdim: true);
        var n = ((g - mean) / variance.Shift(eps).sqrt()).reshape(x.shape);
        var shape = new long[x.dim()];
        Array.Fill(shape, 1L);
        shape[1] = c;
        return (n * W(p + ".weight").view(shape)).Plus(W(p + ".bias").view(shape));
    }

    private Tensor Ln(Tensor x, string p, double eps)
    {
        var mean = x.mean([-1L], keepdim: true);
        var variance = (x - mean).Squared().mean([-1L], keepdim: true);
        return ((x - mean) / variance.Shift(eps).sqrt() * W(p + ".weight")).Plus(W(p + ".bias"));
    }

    private static Tensor Silu(Tensor x) => x * x.sigmoid();

    private static Tensor Softmax(Tensor s)
    {
        var e = (s - s.amax([-1L], keepdim: true)).exp();
        return e / e.sum([-1L], keepdim: true);
    }

    private static Tensor Mha(Tensor q, Tensor k, Tensor v, int heads, bool causal = false)
    {
        long b = q.shape[0], n = q.shape[1], s = k.shape[1], c = q.shape[2], d = c / heads;
        var qh = q.reshape(b, n, heads, d).permute(0, 2, 1, 3);
        var kh = k.reshape(b, s, heads, d).permute(0, 2, 1, 3);
        var vh = v.reshape(b, s, heads, d).permute(0, 2, 1, 3);
        var scores = matmul(qh, kh.transpose(2, 3)).Over(Math.Sqrt(d));
        if (causal)
        {
            scores = scores.Plus(ones(n, s).triu(1).Times(-1e9));
        }
        return matmul(Softmax(scores), vh).permute(0, 2, 1, 3).reshape(b, n, c);
    }

    private Tensor Resnet(Tensor x, string p, Tensor? temb, double eps, long groups)
    {
        var h = Conv(Silu(Gn(x, p + ".norm1", eps, groups)), p + ".conv1");
        if (temb is not null)
        {
            h = h.Plus(Lin(Silu(temb), p + ".time_emb_proj").unsqueeze(2).unsqueeze(3));
        }
        h = Conv(Silu(Gn(h, p + ".norm2", eps, groups)), p + ".conv2");
        var shortcut = w.ContainsKey(p + ".conv_shortcut.weight") ? Conv(x, p + ".conv_shortcut") : x;
        return shortcut.Plus(h);
    }

    private Tensor Transformer(Tensor x, string p, Tensor ctx, int heads, long groups)
    {
        long b = x.shape[0], c = x.shape[1], hh = x.shape[2], ww = x.shape[3];
        var h = Conv(Gn(x, p + ".norm", 1e-6, groups), p + ".proj_in");
        var t = h.permute(0, 2, 3, 1).reshape(b, hh * ww, c);
        var blk = p + ".transformer_blocks.0";
        var n1 = Ln(t, blk + ".norm1", 1e-5);
        t = t.Plus(Lin(Mha(Lin(n1, blk + ".attn1.to_q"), Lin(n1, blk + ".attn1.to_k"), Lin(n1, blk + ".attn1.to_v"), heads), blk + ".attn1.to_out.0"));
        var n2 = Ln(t, blk + ".norm2", 1e-5);
        t = t.Plus(Lin(Mha(Lin(n2, blk + ".attn2.to_q"), Lin(ctx, blk + ".attn2.to_k"), Lin(ctx, blk + ".attn2.to_v"), heads), blk + ".attn2.to_out.0"));
        var n3 = Ln(t, blk + ".norm3", 1e-5);
        var proj = Lin(n3, blk + ".ff.net.0.proj");
        var half = proj.shape[2] / 2;
        var a = proj.narrow(2, 0, half);
        var gate = proj.narrow(2, half, half);
        var gelu = gate.Times(0.5) * gate.Over(Math.Sqrt(2)).erf().Shift(1);
        t = t.Plus(Lin(a * gelu, blk + ".ff.net.2"));
        var back = t.reshape(b, hh, ww, c).permute(0, 3, 1, 2);
        return Conv(back, p + ".proj_out").Plus(x);
    }

    /// <summary>ε for the tiny UNet layout of §1.8 ([32, 64], one layer per block, CrossAttnDown+Down / Up+CrossAttnUp, 2 heads).</summary>
    public Tensor Unet(Tensor x, double t, Tensor ctx, int c0 = 32, int heads = 2, long groups = 32)
    {
        var half = c0 / 2;
        var freqs = new float[half];
        for (var k = 0; k < half; k++)
        {
            freqs[k] = (float)Math.Exp(-Math.Log(10000) * k / half);
        }
        var args = tensor(freqs).Times((float)t);
        var e = cat([args.cos(), args.sin()], 0).unsqueeze(0).expand(x.shape[0], -1);
        var temb = Lin(Silu(Lin(e, "time_embedding.linear_1")), "time_embedding.linear_2");
        var h = Conv(x, "conv_in");
        var skips = new Stack<Tensor>();
        skips.Push(h);
        h = Resnet(h, "down_blocks.0.resnets.0", temb, 1e-5, groups);
        h = Transformer(h, "down_blocks.0.attentions.0", ctx, heads, groups);
        skips.Push(h);
        h = Conv(h, "down_blocks.0.downsamplers.0.conv", 2, 1);
        skips.Push(h);
        h = Resnet(h, "down_blocks.1.resnets.0", temb, 1e-5, groups);
        skips.Push(h);
        h = Resnet(h, "mid_block.resnets.0", temb, 1e-5, groups);
        h = Transformer(h, "mid_block.attentions.0", ctx, heads, groups);
        h = Resnet(h, "mid_block.resnets.1", temb, 1e-5, groups);
        for (var j = 0; j < 2; j++)
        {
            h = Resnet(cat([h, skips.Pop()], 1), $"up_blocks.0.resnets.{j}", temb, 1e-5, groups);
        }
        var target = skips.Peek();
        h = Conv(NearestTo(h, target.shape[2], target.shape[3]), "up_blocks.0.upsamplers.0.conv");
        for (var j = 0; j < 2; j++)
        {
            h = Resnet(cat([h, skips.Pop()], 1), $"up_blocks.1.resnets.{j}", temb, 1e-5, groups);
            h = Transformer(h, $"up_blocks.1.attentions.{j}", ctx, heads, groups);
        }
        return Conv(Silu(Gn(h, "conv_norm_out", 1e-5, groups)), "conv_out");
    }

    /// <summary>Nearest-neighbour by index arithmetic: output row i reads input row floor(i·H/H').</summary>
    private static Tensor NearestTo(Tensor x, long h2, long w2)
    {
        long h = x.shape[2], w = x.shape[3];
        var rows = tensor(Enumerable.Range(0, (int)h2).Select(i => (long)Math.Floor(i * (double)h / h2)).ToArray());
        var cols = tensor(Enumerable.Range(0, (int)w2).Select(i => (long)Math.Floor(i * (double)w / w2)).ToArray());
        return x.index_select(2, rows).index_select(3, cols);
    }

    private Tensor VaeAttention(Tensor x, string p, long groups)
    {
        long b = x.shape[0], c = x.shape[1], hh = x.shape[2], ww = x.shape[3];
        var t = Gn(x, p + ".group_norm", 1e-6, groups).reshape(b, c, hh * ww).transpose(1, 2);
        var o = Mha(Lin(t, p + ".to_q"), Lin(t, p + ".to_k"), Lin(t, p + ".to_v"), 1);
        return Lin(o, p + ".to_out.0").transpose(1, 2).reshape(b, c, hh, ww).Plus(x);
    }

    private Tensor VaeMid(Tensor h, string p, long groups) =>
        Resnet(VaeAttention(Resnet(h, p + ".resnets.0", null, 1e-6, groups), p + ".attentions.0", groups), p + ".resnets.1", null, 1e-6, groups);

    /// <summary>Tiny VAE decode (§1.8: [32, 64], one layer per block) of unscaled latents.</summary>
    public Tensor Decode(Tensor z, long groups = 32)
    {
        var h = Conv(Conv(z, "post_quant_conv"), "decoder.conv_in");
        h = VaeMid(h, "decoder.mid_block", groups);
        for (var j = 0; j < 2; j++)
        {
            h = Resnet(h, $"decoder.up_blocks.0.resnets.{j}", null, 1e-6, groups);
        }
        h = Conv(NearestTo(h, h.shape[2] * 2, h.shape[3] * 2), "decoder.up_blocks.0.upsamplers.0.conv");
        for (var j = 0; j < 2; j++)
        {
            h = Resnet(h, $"decoder.up_blocks.1.resnets.{j}", null, 1e-6, groups);
        }
        return Conv(Silu(Gn(h, "decoder.conv_norm_out", 1e-6, groups)), "decoder.conv_out");
    }

    /// <summary>Tiny VAE posterior mean (unscaled).</summary>
    public Tensor EncodeMean(Tensor image, long groups = 32)
    {
        var h = Conv(image, "encoder.conv_in");
        h = Resnet(h, "encoder.down_blocks.0.resnets.0", null, 1e-6, groups);
        h = Conv(F.pad(h, [0, 1, 0, 1]), "encoder.down_blocks.0.downsamplers.0.conv", 2, 0);
        h = Resnet(h, "encoder.down_blocks.1.resnets.0", null, 1e-6, groups);
        h = VaeMid(h, "encoder.mid_block", groups);
        h = Conv(Silu(Gn(h, "encoder.conv_norm_out", 1e-6, groups)), "encoder.conv_out");
        var moments = Conv(h, "quant_conv");
        return moments.narrow(1, 0, moments.shape[1] / 2);
    }

    /// <summary>CLIP text last_hidden_state (after the final LayerNorm) for ids [B, S].</summary>
    public Tensor Text(Tensor ids, int layers, int heads)
    {
        var n = ids.shape[1];
        var h = W("text_model.embeddings.token_embedding.weight").index_select(0, ids.flatten()).view(ids.shape[0], n, -1).Plus(W("text_model.embeddings.position_embedding.weight").narrow(0, 0, n));
        for (var l = 0; l < layers; l++)
        {
            var p = $"text_model.encoder.layers.{l}";
            var a = Ln(h, p + ".layer_norm1", 1e-5);
            h = h.Plus(Lin(Mha(Lin(a, p + ".self_attn.q_proj"), Lin(a, p + ".self_attn.k_proj"), Lin(a, p + ".self_attn.v_proj"), heads, causal: true), p + ".self_attn.out_proj"));
            var m = Lin(Ln(h, p + ".layer_norm2", 1e-5), p + ".mlp.fc1");
            h = h.Plus(Lin(m * m.Times(1.702).sigmoid(), p + ".mlp.fc2"));
        }
        return Ln(h, "text_model.final_layer_norm", 1e-5);
    }
}
