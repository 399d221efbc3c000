using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;

namespace Pipelines.Tests.Models;

/// <summary>Small random configs of every supported family, for invariance tests.</summary>
public static class TinyModels
{
    public static TransformerConfig Gpt2 => new()
    {
        Architecture = "gpt2", DModel = 32, NLayers = 2, NHeads = 4, DMlp = 64, DVocab = 50, NCtx = 32,
        Act = Activation.GeluNew, TiedEmbeddings = true, EosTokenId = 0, BosTokenId = 0,
    };

    public static TransformerConfig NeoX => new()
    {
        Architecture = "gpt_neox", DModel = 32, NLayers = 2, NHeads = 4, DMlp = 64, DVocab = 50, NCtx = 32,
        Positional = PositionalKind.Rotary, RotaryDim = 2, RotaryBase = 10000, Act = Activation.Gelu, ParallelAttnMlp = true,
        DefaultPrependBos = false,
    };

    public static TransformerConfig Llama => new()
    {
        Architecture = "llama", DModel = 32, NLayers = 2, NHeads = 4, NKvHeads = 2, DMlp = 48, DVocab = 50, NCtx = 32,
        Norm = NormKind.RmsNorm, NormBias = false, Positional = PositionalKind.Rotary, RotaryBase = 500000, Act = Activation.Silu,
        GatedMlp = true, QkvBias = false, AttnOutBias = false, MlpBias = false, NormEps = 1e-5,
    };

    public static TransformerConfig Qwen2 => Llama with { Architecture = "qwen2", QkvBias = true, RotaryBase = 1000000, NKvHeads = 1, DefaultPrependBos = false, TiedEmbeddings = true };

    public static IEnumerable<object[]> All() => new[] { "gpt2", "gpt_neox", "llama", "qwen2" }.Select(a => new object[] { a });

    public static TransformerConfig ByName(string name) => name switch
    {
        "gpt2" => Gpt2,
        "gpt_neox" => NeoX,
        "llama" => Llama,
        _ => Qwen2,
    };

    public static HookedTransformer Create(string name, long seed = 1)
    {
        var model = new HookedTransformer(ByName(name)).InitWeights(seed, std: 0.2);
        using var _ = TorchSharp.torch.no_grad();
        using var g = new TorchSharp.torch.Generator(99);
        foreach (var (n, p) in model.named_parameters())
        {
            if (n.Split('.')[^1] is "w" or "b" || n.Split('.')[^1].StartsWith("b_", StringComparison.Ordinal))
            {
                p.PlusInPlace(TorchSharp.torch.randn(p.shape, generator: g).mul(Scalars.Of(0.1))); // non-trivial norms and biases
            }
        }
        return model;
    }
}
