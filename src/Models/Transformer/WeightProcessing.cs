using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Models.Transformer;

/// <summary>
/// TransformerLens' weight-processing transforms, as separate in-place steps on a loaded model. Each leaves the
/// model's log-probabilities unchanged (the tests check it); they make weights easier to read, not the model different.
/// </summary>
public static class WeightProcessing
{
    /// <summary>Runs fold_ln, center_writing_weights, center_unembed and fold_value_biases, as TransformerLens does by default.</summary>
    public static void ApplyDefaults(HookedTransformer model)
    {
        FoldLayerNorm(model);
        CenterWritingWeights(model);
        CenterUnembed(model);
        FoldValueBiases(model);
    }

    /// <summary>
    /// Folds each norm's scale (and, where the reader has a bias, its bias) into the weights that read its output:
    /// ln1 → W_Q/W_K/W_V, ln2 → W_in/W_gate, ln_final → W_U. For LayerNorm the reading weights are then centred
    /// along d_model (the normalized input has zero mean there). A norm whose bias has nowhere to go keeps it, rescaled.
    /// </summary>
    public static void FoldLayerNorm(HookedTransformer model)
    {
        using var _ = no_grad();
        var centre = model.Config.Norm == NormKind.LayerNorm;
        foreach (var block in model.blocks)
        {
            var a = block.attn;
            Fold(block.ln1, [(a.W_Q, a.b_Q), (a.W_K, a.b_K), (a.W_V, a.b_V)], centre, headed: true);
            var mlp = block.mlp;
            var readers = new List<(Tensor, Tensor?)> { (mlp.W_in, mlp.b_in) };
            if (mlp.W_gate is not null)
            {
                readers.Add((mlp.W_gate, null));
            }
            Fold(block.ln2!, readers, centre, headed: false);
        }
        Fold(model.ln_final, [(model.W_U, model.b_U)], centre, headed: false);
    }

    private static void Fold(Norm norm, IReadOnlyList<(Tensor W, Tensor? B)> readers, bool centre, bool headed)
    {
        var w = norm.w.detach().clone();
        var b = norm.b?.detach().clone();
        var biasFolded = b is not null && readers.All(r => r.B is not null);
        // Centring is exact only when what the readers see is the centred normalized input: no bias left behind.
        centre = centre && (b is null || biasFolded);
        foreach (var (weight, bias) in readers)
        {
            // weight: [d, out] or, for heads, [H, d, dh]
            if (biasFolded)
            {
                bias!.PlusInPlace(headed ? einsum("d,hde->he", b!, weight) : matmul(b!, weight));
            }
            var scaled = headed ? weight * w.view(1, -1, 1) : weight * w.view(-1, 1);
            if (centre)
            {
                scaled = scaled - scaled.mean([headed ? 1L : 0L], keepdim: true);
            }
            weight.copy_(scaled);
        }
        if (b is not null)
        {
            norm.b!.copy_(biasFolded ? zeros_like(b) : b / w);
        }
        norm.w.fill_(Scalars.Of(1.0));
    }

    /// <summary>Subtracts the d_model-mean from every weight that writes to the residual stream (LayerNorm models only).</summary>
    public static void CenterWritingWeights(HookedTransformer model)
    {
        if (model.Config.Norm != NormKind.LayerNorm)
        {
            return;
        }
        using var _ = no_grad();
        static void Centre(Tensor? t)
        {
            if (t is not null)
            {
                t.sub_(t.mean([-1L], keepdim: true));
            }
        }
        Centre(model.W_E);
        Centre(model.W_pos);
        foreach (var block in model.blocks)
        {
            Centre(block.attn.W_O);
            Centre(block.attn.b_O);
            Centre(block.mlp.W_out);
            Centre(block.mlp.b_out);
        }
    }

    /// <summary>Subtracts the vocabulary-mean from the unembedding: logits shift by a per-position constant, probabilities do not change.</summary>
    public static void CenterUnembed(HookedTransformer model)
    {
        using var _ = no_grad();
        model.W_U.sub_(model.W_U.mean([-1L], keepdim: true));
        model.b_U?.sub_(model.b_U.mean());
    }

    /// <summary>b_O += Σ_h b_V[h]·W_O[h] and b_V = 0: valid because each attention pattern row sums to 1.</summary>
    public static void FoldValueBiases(HookedTransformer model)
    {
        using var _ = no_grad();
        foreach (var block in model.blocks)
        {
            var a = block.attn;
            if (a.b_V is null || a.b_O is null)
            {
                continue;
            }
            var bV = a.b_V.repeat_interleave(model.Config.NHeads / model.Config.KvHeads, dim: 0); // per query head
            a.b_O.PlusInPlace(einsum("he,hed->d", bV, a.W_O));
            a.b_V.zero_();
        }
    }
}
