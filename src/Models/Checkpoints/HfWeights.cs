using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Models.Checkpoints;

/// <summary>
/// Maps HF checkpoint tensors to the TransformerLens layout and back, per architecture: GPT-2 (Conv1D [in,out],
/// fused c_attn), GPT-NeoX (fused query_key_value interleaved per head), Llama and Qwen2 (separate projections, GQA).
/// All maps are views and permutations, so a save followed by a load is bit-exact.
/// </summary>
public static class HfWeights
{
    /// <summary>TransformerLens name → tensor, reading HF tensors through <paramref name="get"/> (which names what is missing).</summary>
    public static Dictionary<string, Tensor> ToLens(TransformerConfig c, Func<string, Tensor> get, Func<string, bool> has)
    {
        var w = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        int d = c.DModel, h = c.NHeads, kv = c.KvHeads, dh = c.HeadDim;
        switch (c.Architecture)
        {
            case "gpt2":
            {
                var p = has("transformer.wte.weight") ? "transformer." : "";
                w["W_E"] = get(p + "wte.weight");
                w["W_pos"] = get(p + "wpe.weight");
                for (var l = 0; l < c.NLayers; l++)
                {
                    var b = $"{p}h.{l}.";
                    var L = $"blocks.{l}.";
                    Norm(w, L + "ln1", get, b + "ln_1", true);
                    Norm(w, L + "ln2", get, b + "ln_2", true);
                    var qkv = get(b + "attn.c_attn.weight").split(d, 1);
                    var qkvBias = get(b + "attn.c_attn.bias").split(d, 0);
                    string[] names = ["Q", "K", "V"];
                    for (var i = 0; i < 3; i++)
                    {
                        w[L + "attn.W_" + names[i]] = qkv[i].view(d, h, dh).permute(1, 0, 2);
                        w[L + "attn.b_" + names[i]] = qkvBias[i].view(h, dh);
                    }
                    w[L + "attn.W_O"] = get(b + "attn.c_proj.weight").view(h, dh, d);
                    w[L + "attn.b_O"] = get(b + "attn.c_proj.bias");
                    w[L + "mlp.W_in"] = get(b + "mlp.c_fc.weight");
                    w[L + "mlp.b_in"] = get(b + "mlp.c_fc.bias");
                    w[L + "mlp.W_out"] = get(b + "mlp.c_proj.weight");
                    w[L + "mlp.b_out"] = get(b + "mlp.c_proj.bias");
                }
                Norm(w, "ln_final", get, p + "ln_f", true);
                w["W_U"] = (has("lm_head.weight") ? get("lm_head.weight") : w["W_E"]).t();
                break;
            }
            case "gpt_neox":
            {
                w["W_E"] = get("gpt_neox.embed_in.weight");
                for (var l = 0; l < c.NLayers; l++)
                {
                    var b = $"gpt_neox.layers.{l}.";
                    var L = $"blocks.{l}.";
                    Norm(w, L + "ln1", get, b + "input_layernorm", true);
                    Norm(w, L + "ln2", get, b + "post_attention_layernorm", true);
                    var qkv = get(b + "attention.query_key_value.weight").view(h, 3, dh, d);
                    var qkvBias = get(b + "attention.query_key_value.bias").view(h, 3, dh);
                    string[] names = ["Q", "K", "V"];
                    for (var i = 0; i < 3; i++)
                    {
                        w[L + "attn.W_" + names[i]] = qkv.select(1, i).permute(0, 2, 1);
                        w[L + "attn.b_" + names[i]] = qkvBias.select(1, i);
                    }
                    w[L + "attn.W_O"] = get(b + "attention.dense.weight").t().reshape(h, dh, d);
                    w[L + "attn.b_O"] = get(b + "attention.dense.bias");
                    w[L + "mlp.W_in"] = get(b + "mlp.dense_h_to_4h.weight").t();
                    w[L + "mlp.b_in"] = get(b + "mlp.dense_h_to_4h.bias");
                    w[L + "mlp.W_out"] = get(b + "mlp.dense_4h_to_h.weight").t();
                    w[L + "mlp.b_out"] = get(b + "mlp.dense_4h_to_h.bias");
                }
                Norm(w, "ln_final", get, "gpt_neox.final_layer_norm", true);
                w["W_U"] = (c.TiedEmbeddings && !has("embed_out.weight") ? w["W_E"] : get("embed_out.weight")).t();
                break;
            }
            default:
            {
                w["W_E"] = get("model.embed_tokens.weight");
                for (var l = 0; l < c.NLayers; l++)
                {
                    var b = $"model.layers.{l}.";
                    var L = $"blocks.{l}.";
                    Norm(w, L + "ln1", get, b + "input_layernorm", false);
                    Norm(w, L + "ln2", get, b + "post_attention_layernorm", false);
                    w[L + "attn.W_Q"] = get(b + "self_attn.q_proj.weight").view(h, dh, d).permute(0, 2, 1);
                    w[L + "attn.W_K"] = get(b + "self_attn.k_proj.weight").view(kv, dh, d).permute(0, 2, 1);
                    w[L + "attn.W_V"] = get(b + "self_attn.v_proj.weight").view(kv, dh, d).permute(0, 2, 1);
                    if (c.QkvBias)
                    {
                        w[L + "attn.b_Q"] = get(b + "self_attn.q_proj.bias").view(h, dh);
                        w[L + "attn.b_K"] = get(b + "self_attn.k_proj.bias").view(kv, dh);
                        w[L + "attn.b_V"] = get(b + "self_attn.v_proj.bias").view(kv, dh);
                    }
                    w[L + "attn.W_O"] = get(b + "self_attn.o_proj.weight").t().reshape(h, dh, d);
                    if (c.AttnOutBias)
                    {
                        w[L + "attn.b_O"] = get(b + "self_attn.o_proj.bias");
                    }
                    w[L + "mlp.W_gate"] = get(b + "mlp.gate_proj.weight").t();
                    w[L + "mlp.W_in"] = get(b + "mlp.up_proj.weight").t();
                    w[L + "mlp.W_out"] = get(b + "mlp.down_proj.weight").t();
                    if (c.MlpBias)
                    {
                        w[L + "mlp.b_in"] = get(b + "mlp.up_proj.bias");
                        w[L + "mlp.b_out"] = get(b + "mlp.down_proj.bias");
                    }
                }
                Norm(w, "ln_final", get, "model.norm", false);
                w["W_U"] = (c.TiedEmbeddings && !has("lm_head.weight") ? w["W_E"] : get("lm_head.weight")).t();
                break;
            }
        }
        return w;
    }

    /// <summary>HF name → tensor for a model's weights (the layout <see cref="ToLens"/> reads).</summary>
    public static List<(string Name, Tensor Tensor)> ToHf(HookedTransformer model)
    {
        var c = model.Config;
        var p = model.named_parameters().ToDictionary(x => x.name, x => (Tensor)x.parameter.detach());
        var o = new List<(string, Tensor)>();
        int d = c.DModel, h = c.NHeads, kv = c.KvHeads, dh = c.HeadDim;
        void Add(string name, Tensor t) => o.Add((name, t.contiguous()));
        switch (c.Architecture)
        {
            case "gpt2":
                Add("transformer.wte.weight", p["W_E"]);
                Add("transformer.wpe.weight", p["W_pos"]);
                for (var l = 0; l < c.NLayers; l++)
                {
                    var b = $"transformer.h.{l}.";
                    var L = $"blocks.{l}.";
                    NormOut(Add, p, L + "ln1", b + "ln_1", true);
                    NormOut(Add, p, L + "ln2", b + "ln_2", true);
                    Add(b + "attn.c_attn.weight", cat(new[] { "Q", "K", "V" }.Select(n => p[L + "attn.W_" + n].permute(1, 0, 2).reshape(d, h * dh)).ToArray(), 1));
                    Add(b + "attn.c_attn.bias", cat(new[] { "Q", "K", "V" }.Select(n => p[L + "attn.b_" + n].reshape(h * dh)).ToArray(), 0));
                    Add(b + "attn.c_proj.weight", p[L + "attn.W_O"].reshape(h * dh, d));
                    Add(b + "attn.c_proj.bias", p[L + "attn.b_O"]);
                    Add(b + "mlp.c_fc.weight", p[L + "mlp.W_in"]);
                    Add(b + "mlp.c_fc.bias", p[L + "mlp.b_in"]);
                    Add(b + "mlp.c_proj.weight", p[L + "mlp.W_out"]);
                    Add(b + "mlp.c_proj.bias", p[L + "mlp.b_out"]);
                }
                NormOut(Add, p, "ln_final", "transformer.ln_f", true);
                if (!c.TiedEmbeddings)
                {
                    Add("lm_head.weight", p["W_U"].t());
                }
                break;
            case "gpt_neox":
                Add("gpt_neox.embed_in.weight", p["W_E"]);
                for (var l = 0; l < c.NLayers; l++)
                {
                    var b = $"gpt_neox.layers.{l}.";
                    var L = $"blocks.{l}.";
                    NormOut(Add, p, L + "ln1", b + "input_layernorm", true);
                    NormOut(Add, p, L + "ln2", b + "post_attention_layernorm", true);
                    Add(b + "attention.query_key_value.weight", stack(new[] { "Q", "K", "V" }.Select(n => p[L + "attn.W_" + n].permute(0, 2, 1)).ToArray(), 1).reshape(3 * h * dh, d));
                    Add(b + "attention.query_key_value.bias", stack(new[] { "Q", "K", "V" }.Select(n => p[L + "attn.b_" + n]).ToArray(), 1).reshape(3 * h * dh));
                    Add(b + "attention.dense.weight", p[L + "attn.W_O"].reshape(h * dh, d).t());
                    Add(b + "attention.dense.bias", p[L + "attn.b_O"]);
                    Add(b + "mlp.dense_h_to_4h.weight", p[L + "mlp.W_in"].t());
                    Add(b + "mlp.dense_h_to_4h.bias", p[L + "mlp.b_in"]);
                    Add(b + "mlp.dense_4h_to_h.weight", p[L + "mlp.W_out"].t());
                    Add(b + "mlp.dense_4h_to_h.bias", p[L + "mlp.b_out"]);
                }
                NormOut(Add, p, "ln_final", "gpt_neox.final_layer_norm", true);
                if (!c.TiedEmbeddings)
                {
                    Add("embed_out.weight", p["W_U"].t());
                }
                break;
            default:
                Add("model.embed_tokens.weight", p["W_E"]);
                for (var l = 0; l < c.NLayers; l++)
                {
                    var b = $"model.layers.{l}.";
                    var L = $"blocks.{l}.";
                    NormOut(Add, p, L + "ln1", b + "input_layernorm", false);
                    NormOut(Add, p, L + "ln2", b + "post_attention_layernorm", false);
                    Add(b + "self_attn.q_proj.weight", p[L + "attn.W_Q"].permute(0, 2, 1).reshape(h * dh, d));
                    Add(b + "self_attn.k_proj.weight", p[L + "attn.W_K"].permute(0, 2, 1).reshape(kv * dh, d));
                    Add(b + "self_attn.v_proj.weight", p[L + "attn.W_V"].permute(0, 2, 1).reshape(kv * dh, d));
                    if (c.QkvBias)
                    {
                        Add(b + "self_attn.q_proj.bias", p[L + "attn.b_Q"].reshape(h * dh));
                        Add(b + "self_attn.k_proj.bias", p[L + "attn.b_K"].reshape(kv * dh));
                        Add(b + "self_attn.v_proj.bias", p[L + "attn.b_V"].reshape(kv * dh));
                    }
                    Add(b + "self_attn.o_proj.weight", p[L + "attn.W_O"].reshape(h * dh, d).t());
                    if (c.AttnOutBias)
                    {
                        Add(b + "self_attn.o_proj.bias", p[L + "attn.b_O"]);
                    }
                    Add(b + "mlp.gate_proj.weight", p[L + "mlp.W_gate"].t());
                    Add(b + "mlp.up_proj.weight", p[L + "mlp.W_in"].t());
                    Add(b + "mlp.down_proj.weight", p[L + "mlp.W_out"].t());
                    if (c.MlpBias)
                    {
                        Add(b + "mlp.up_proj.bias", p[L + "mlp.b_in"]);
                        Add(b + "mlp.down_proj.bias", p[L + "mlp.b_out"]);
                    }
                }
                NormOut(Add, p, "ln_final", "model.norm", false);
                if (!c.TiedEmbeddings)
                {
                    Add("lm_head.weight", p["W_U"].t());
                }
                break;
        }
        return o;
    }

    private static void Norm(Dictionary<string, Tensor> w, string lens, Func<string, Tensor> get, string hf, bool bias)
    {
        w[lens + ".w"] = get(hf + ".weight");
        if (bias)
        {
            w[lens + ".b"] = get(hf + ".bias");
        }
    }

    private static void NormOut(Action<string, Tensor> add, Dictionary<string, Tensor> p, string lens, string hf, bool bias)
    {
        add(hf + ".weight", p[lens + ".w"]);
        if (bias && p.TryGetValue(lens + ".b", out var b))
        {
            add(hf + ".bias", b);
        }
    }
}
