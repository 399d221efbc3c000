using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Models.Transformer;

/// <summary>The precision a model is deployed in.</summary>
public enum Quantization { None, Bf16, Int8, Int4 }

/// <summary>
/// Weight quantization as a separate transform over a loaded model (TransformerLens' weight-processing idea). The
/// linear weights (attention W_Q, W_K, W_V, W_O; MLP W_in, W_gate, W_out) are rounded to the deployed precision and
/// stored back dequantized, so every activity computes with exactly the weights a quantized deployment holds:
/// <list type="bullet">
/// <item><c>bf16</c>: each weight rounded to bfloat16;</item>
/// <item><c>int8</c>: per output row, absmax scaling to [-127, 127] (bitsandbytes' 8-bit loading, without the
/// outlier decomposition);</item>
/// <item><c>int4</c>: per output row and group of 64 inputs, absmax scaling to [-7, 7].</item>
/// </list>
/// Embeddings, the unembedding, norms and biases stay float32, as bitsandbytes leaves them. Activations stay float32
/// (weight-only quantization); memory is not reduced, since the weights are stored dequantized.
/// </summary>
public static class WeightQuantization
{
    public const int Int4GroupSize = 64;

    public static void Apply(HookedTransformer model, Quantization q)
    {
        if (q == Quantization.None)
        {
            return;
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var (name, p) in model.named_parameters())
        {
            var leaf = name[(name.LastIndexOf('.') + 1)..];
            if (leaf is not ("W_Q" or "W_K" or "W_V" or "W_O" or "W_in" or "W_gate" or "W_out"))
            {
                continue;
            }
            // As [out, in] rows: W_Q/K/V [H, d_in, dh] → [H·dh, d_in]; W_O [H, dh, d] → [d, H·dh]; W_in/W_gate/W_out [in, out] → [out, in].
            var rows = leaf switch
            {
                "W_Q" or "W_K" or "W_V" => p.permute(0, 2, 1).reshape(-1, p.shape[1]),
                "W_O" => p.reshape(-1, p.shape[2]).t(),
                _ => p.t(),
            };
            var quantized = Quantize(rows.to(ScalarType.Float32), q).to(p.dtype);
            var back = leaf switch
            {
                "W_Q" or "W_K" or "W_V" => quantized.reshape(p.shape[0], p.shape[2], p.shape[1]).permute(0, 2, 1),
                "W_O" => quantized.t().reshape(p.shape),
                _ => quantized.t(),
            };
            p.copy_(back);
        }
    }

    /// <summary>Quantizes then dequantizes a [rows, in] matrix.</summary>
    public static Tensor Quantize(Tensor rows, Quantization q)
    {
        switch (q)
        {
            case Quantization.Bf16:
                return rows.to(ScalarType.BFloat16).to(ScalarType.Float32);
            case Quantization.Int8:
                var scale = rows.abs().amax([1], keepdim: true).clamp_min(Scalars.Of(1e-12)) / Scalars.Of(127);
                return (rows / scale).round().clamp(Scalars.Of(-127), Scalars.Of(127)) * scale;
            case Quantization.Int4:
                var n = rows.shape[0];
                var width = rows.shape[1];
                var padded = (width + Int4GroupSize - 1) / Int4GroupSize * Int4GroupSize;
                var x = padded == width ? rows : nn.functional.pad(rows, [0, padded - width]);
                var groups = x.reshape(n, padded / Int4GroupSize, Int4GroupSize);
                var s = groups.abs().amax([2], keepdim: true).clamp_min(Scalars.Of(1e-12)) / Scalars.Of(7);
                var dq = ((groups / s).round().clamp(Scalars.Of(-7), Scalars.Of(7)) * s).reshape(n, padded);
                return padded == width ? dq : dq[.., ..(int)width];
            default:
                return rows;
        }
    }
}
