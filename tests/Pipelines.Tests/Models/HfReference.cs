using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Tests.Models;

/// <summary>
/// Independent forwards written directly on HF-layout tensors, following HF's modeling code (GPT2, GPTNeoX,
/// Llama/Qwen2). They share nothing with our model or converters, so agreement checks the conversions.
/// </summary>
public static class HfReference
{
    public static Tensor Forward(TransformerConfig c, Func<string, Tensor> w, Tensor tokens) => c.Architecture switch
    {
        "gpt2" => Gpt2(c, w, tokens),
        "gpt_neox" => NeoX(c, w, tokens),
        _ => Llama(c, w, tokens),
    };

    private static Tensor Attend(Tensor q, Tensor k, Tensor v)
    {
        // q, k, v: [B, H, T, Dh]
        var t = q.shape[2];
        var scores = matmul(q, k.transpose(-1, -2)).div(Scalars.Of(Math.Sqrt(q.shape[3])));
        var mask = ones(t, t, dtype: ScalarType.Bool).tril();
        return matmul(F.softmax(scores.masked_fill(mask.logical_not(), Scalars.Of(double.NegativeInfinity)), -1), v);
    }

    private static Tensor RotateHalf(Tensor x, Tensor pos, int dims, double theta)
    {
        // x: [B, H, T, Dh]; HF apply_rotary_pos_emb on the first `dims` dims.
        var inv = tensor(Enumerable.Range(0, dims / 2).Select(i => (float)(1.0 / Math.Pow(theta, 2.0 * i / dims))).ToArray());
        var freqs = outer(pos.to(ScalarType.Float32), inv);
        var emb = cat([freqs, freqs], -1);
        var cos = emb.cos();
        var sin = emb.sin();
        var r = x[.., .., .., ..dims];
        var half = dims / 2;
        var rotated = cat([-r[.., .., .., half..], r[.., .., .., ..half]], -1);
        var y = (r * cos).Plus(rotated * sin);
        return dims == x.shape[3] ? y : cat([y, x[.., .., .., dims..]], -1);
    }

    private static Tensor Gpt2(TransformerConfig c, Func<string, Tensor> w, Tensor tokens)
    {
        long b = tokens.shape[0], t = tokens.shape[1];
        int d = c.DModel, h = c.NHeads, dh = d / h;
        var x = w("transformer.wte.weight")[tokens].Plus(w("transformer.wpe.weight")[Scalars.Range(t)]);
        for (var l = 0; l < c.NLayers; l++)
        {
            var p = $"transformer.h.{l}.";
            var a = F.layer_norm(x, [d], w(p + "ln_1.weight"), w(p + "ln_1.bias"), c.NormEps);
            var qkv = matmul(a, w(p + "attn.c_attn.weight")).Plus(w(p + "attn.c_attn.bias"));
            var parts = qkv.split(d, -1);
            var heads = parts.Select(z => z.view(b, t, h, dh).transpose(1, 2)).ToArray();
            var y = Attend(heads[0], heads[1], heads[2]).transpose(1, 2).reshape(b, t, d);
            x = x.Plus(matmul(y, w(p + "attn.c_proj.weight"))).Plus(w(p + "attn.c_proj.bias"));
            var m = F.layer_norm(x, [d], w(p + "ln_2.weight"), w(p + "ln_2.bias"), c.NormEps);
            var pre = matmul(m, w(p + "mlp.c_fc.weight")).Plus(w(p + "mlp.c_fc.bias"));
            var act = pre.mul(Scalars.Of(0.5)) * pre.Plus(pre.pow(Scalars.Of(3.0)).mul(Scalars.Of(0.044715))).mul(Scalars.Of(Math.Sqrt(2 / Math.PI))).tanh().Plus(Scalars.Of(1.0));
            x = x.Plus(matmul(act, w(p + "mlp.c_proj.weight"))).Plus(w(p + "mlp.c_proj.bias"));
        }
        x = F.layer_norm(x, [d], w("transformer.ln_f.weight"), w("transformer.ln_f.bias"), c.NormEps);
        return matmul(x, (c.TiedEmbeddings ? w("transformer.wte.weight") : w("lm_head.weight")).t());
    }

    private static Tensor NeoX(TransformerConfig c, Func<string, Tensor> w, Tensor tokens)
    {
        long b = tokens.shape[0], t = tokens.shape[1];
        int d = c.DModel, h = c.NHeads, dh = d / h;
        var x = w("gpt_neox.embed_in.weight")[tokens];
        var pos = Scalars.Range(t);
        for (var l = 0; l < c.NLayers; l++)
        {
            var p = $"gpt_neox.layers.{l}.";
            var a = F.layer_norm(x, [d], w(p + "input_layernorm.weight"), w(p + "input_layernorm.bias"), c.NormEps);
            var qkv = F.linear(a, w(p + "attention.query_key_value.weight"), w(p + "attention.query_key_value.bias")).view(b, t, h, 3 * dh).transpose(1, 2);
            var q = RotateHalf(qkv[.., .., .., ..dh], pos, c.RotaryDims, c.RotaryBase);
            var k = RotateHalf(qkv[.., .., .., dh..(2 * dh)], pos, c.RotaryDims, c.RotaryBase);
            var v = qkv[.., .., .., (2 * dh)..];
            var y = Attend(q, k, v).transpose(1, 2).reshape(b, t, d);
            var attn = F.linear(y, w(p + "attention.dense.weight"), w(p + "attention.dense.bias"));
            var m = F.layer_norm(x, [d], w(p + "post_attention_layernorm.weight"), w(p + "post_attention_layernorm.bias"), c.NormEps);
            var mlp = F.linear(F.gelu(F.linear(m, w(p + "mlp.dense_h_to_4h.weight"), w(p + "mlp.dense_h_to_4h.bias"))), w(p + "mlp.dense_4h_to_h.weight"), w(p + "mlp.dense_4h_to_h.bias"));
            x = x.Plus(attn).Plus(mlp);
        }
        x = F.layer_norm(x, [d], w("gpt_neox.final_layer_norm.weight"), w("gpt_neox.final_layer_norm.bias"), c.NormEps);
        return F.linear(x, w("embed_out.weight"));
    }

    private static Tensor Llama(TransformerConfig c, Func<string, Tensor> w, Tensor tokens)
    {
        long b = tokens.shape[0], t = tokens.shape[1];
        int d = c.DModel, h = c.NHeads, kv = c.KvHeads, dh = c.HeadDim;
        Tensor Rms(Tensor z, Tensor weight) => z * rsqrt(z.Squared().mean([-1L], keepdim: true).Plus(Scalars.Of(c.NormEps))) * weight;
        Tensor Lin(Tensor z, string name, bool bias) => F.linear(z, w(name + ".weight"), bias ? w(name + ".bias") : null);
        var x = w("model.embed_tokens.weight")[tokens];
        var pos = Scalars.Range(t);
        for (var l = 0; l < c.NLayers; l++)
        {
            var p = $"model.layers.{l}.";
            var a = Rms(x, w(p + "input_layernorm.weight"));
            var q = RotateHalf(Lin(a, p + "self_attn.q_proj", c.QkvBias).view(b, t, h, dh).transpose(1, 2), pos, dh, c.RotaryBase);
            var k = RotateHalf(Lin(a, p + "self_attn.k_proj", c.QkvBias).view(b, t, kv, dh).transpose(1, 2), pos, dh, c.RotaryBase);
            var v = Lin(a, p + "self_attn.v_proj", c.QkvBias).view(b, t, kv, dh).transpose(1, 2);
            // HF repeat_kv: [B, kv, T, Dh] → [B, kv * n_rep, T, Dh], each kv head repeated n_rep times in a row.
            var rep = h / kv;
            k = k.unsqueeze(2).expand(b, kv, rep, t, dh).reshape(b, h, t, dh);
            v = v.unsqueeze(2).expand(b, kv, rep, t, dh).reshape(b, h, t, dh);
            var y = Attend(q, k, v).transpose(1, 2).reshape(b, t, h * dh);
            x = x.Plus(Lin(y, p + "self_attn.o_proj", c.AttnOutBias));
            var m = Rms(x, w(p + "post_attention_layernorm.weight"));
            x = x.Plus(Lin(F.silu(Lin(m, p + "mlp.gate_proj", false)) * Lin(m, p + "mlp.up_proj", false), p + "mlp.down_proj", false));
        }
        x = Rms(x, w("model.norm.weight"));
        return F.linear(x, c.TiedEmbeddings ? w("model.embed_tokens.weight") : w("lm_head.weight"));
    }
}
