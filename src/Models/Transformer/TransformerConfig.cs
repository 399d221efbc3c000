namespace Pipelines.Models.Transformer;

public enum NormKind { LayerNorm, RmsNorm }

public enum PositionalKind { Learned, Rotary }

public enum Activation { GeluNew, Gelu, Silu, Relu }

/// <summary>
/// Everything that defines a transformer of the supported families (GPT-2, GPT-NeoX/Pythia, Llama, Qwen2), in
/// TransformerLens terms. Converters build it from a HF config.json.
/// </summary>
public sealed record TransformerConfig
{
    /// <summary>HF model_type: gpt2, gpt_neox, llama or qwen2.</summary>
    public required string Architecture { get; init; }
    public required int DModel { get; init; }
    public required int NLayers { get; init; }
    public required int NHeads { get; init; }
    public int NKvHeads { get; init; }
    public int DHead { get; init; }
    public required int DMlp { get; init; }
    public required int DVocab { get; init; }
    public int NCtx { get; init; } = 1024;
    public NormKind Norm { get; init; } = NormKind.LayerNorm;
    public double NormEps { get; init; } = 1e-5;
    public PositionalKind Positional { get; init; } = PositionalKind.Learned;
    /// <summary>How many leading dims of each head rotate (Pythia: 25% of d_head).</summary>
    public int RotaryDim { get; init; }
    public double RotaryBase { get; init; } = 10000;
    public Activation Act { get; init; } = Activation.GeluNew;
    /// <summary>SwiGLU-style MLP: act(x·W_gate) * (x·W_in).</summary>
    public bool GatedMlp { get; init; }
    /// <summary>Attention and MLP both read resid_pre (GPT-NeoX): no resid_mid.</summary>
    public bool ParallelAttnMlp { get; init; }
    public bool QkvBias { get; init; } = true;
    public bool AttnOutBias { get; init; } = true;
    public bool MlpBias { get; init; } = true;
    public bool NormBias { get; init; } = true;
    public bool UnembedBias { get; init; }
    public bool TiedEmbeddings { get; init; }
    public bool DefaultPrependBos { get; init; } = true;
    public int? BosTokenId { get; init; }
    public int? EosTokenId { get; init; }
    public int? PadTokenId { get; init; }

    public int KvHeads => NKvHeads > 0 ? NKvHeads : NHeads;
    public int HeadDim => DHead > 0 ? DHead : DModel / NHeads;
    public int RotaryDims => RotaryDim > 0 ? RotaryDim : HeadDim;

    /// <summary>Checks the numbers fit together; returns the problems.</summary>
    public IReadOnlyList<string> Problems()
    {
        var p = new List<string>();
        if (DModel <= 0 || NLayers <= 0 || NHeads <= 0 || DMlp <= 0 || DVocab <= 0)
        {
            p.Add($"d_model ({DModel}), n_layers ({NLayers}), n_heads ({NHeads}), d_mlp ({DMlp}) and d_vocab ({DVocab}) must be positive");
            return p; // the checks below divide by these
        }
        if (NCtx <= 0 || NKvHeads < 0 || DHead < 0 || RotaryDim < 0)
        {
            p.Add($"n_ctx ({NCtx}) must be positive, and n_kv_heads, d_head and rotary_dim not negative");
            return p;
        }
        if (DHead <= 0 && DModel % Math.Max(1, NHeads) != 0)
        {
            p.Add($"d_model {DModel} is not divisible by n_heads {NHeads}");
        }
        if (NHeads % Math.Max(1, KvHeads) != 0)
        {
            p.Add($"n_heads {NHeads} is not a multiple of n_kv_heads {KvHeads}");
        }
        if (Positional == PositionalKind.Rotary && (RotaryDims % 2 != 0 || RotaryDims > HeadDim))
        {
            p.Add($"rotary dim {RotaryDims} must be even and at most d_head {HeadDim}");
        }
        return p;
    }

    /// <summary>
    /// The bytes the parameters need at 4 bytes each, or null when the sizes overflow a 64-bit count: checked before a
    /// model is allocated, so a config that promises a billion layers fails in one line instead of exhausting memory.
    /// </summary>
    public long? EstimatedBytes()
    {
        try
        {
            return checked(ParameterCount() * 4);
        }
        catch (OverflowException)
        {
            return null;
        }
    }

    /// <summary>Parameter count, embeddings included (checked arithmetic: throws on overflow).</summary>
    public long ParameterCount() => checked(ParameterCountCore());

    private long ParameterCountCore()
    {
        long d = DModel, h = HeadDim, perLayer = 0;
        perLayer += d * h * NHeads * 2 + d * h * KvHeads * 2; // Q, O, K, V
        perLayer += QkvBias ? h * (NHeads + 2L * KvHeads) : 0;
        perLayer += AttnOutBias ? d : 0;
        perLayer += d * DMlp * (GatedMlp ? 3L : 2L) + (MlpBias ? DMlp + d : 0);
        perLayer += (NormBias ? 2 : 1) * d * 2;
        var total = perLayer * NLayers + (long)DVocab * d + (NormBias ? 2 : 1) * d;
        total += Positional == PositionalKind.Learned ? (long)NCtx * d : 0;
        total += TiedEmbeddings ? 0 : (long)DVocab * d;
        total += UnembedBias ? DVocab : 0;
        return total;
    }
}
