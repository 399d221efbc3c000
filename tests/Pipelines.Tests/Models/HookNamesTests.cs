using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Tests.Models;

/// <summary>Hook names come from one helper, every name it gives exists, and a requested hook always fires.</summary>
public sealed class HookNamesTests
{
    [Theory]
    [MemberData(nameof(TinyModels.All), MemberType = typeof(TinyModels))]
    public void EveryNameTheHelperGivesIsAHookOfTheModel(string arch)
    {
        using var model = TinyModels.Create(arch);
        var names = new List<string> { HookNames.Embed };
        for (var l = 0; l < model.Config.NLayers; l++)
        {
            names.AddRange([HookNames.ResidPre(l), HookNames.ResidMid(l), HookNames.ResidPost(l), HookNames.AttnIn(l), HookNames.AttnOut(l),
                HookNames.MlpIn(l), HookNames.MlpOut(l), HookNames.Input(l, 'q'), HookNames.Input(l, "k"), HookNames.Input(l, 'v'),
                HookNames.Q(l), HookNames.K(l), HookNames.V(l), HookNames.Pattern(l), HookNames.Z(l), HookNames.Result(l), HookNames.Attn(l, "attn_scores")]);
            if (model.Config.Positional == PositionalKind.Rotary)
            {
                names.AddRange([HookNames.RotQ(l), HookNames.RotK(l)]);
            }
        }
        foreach (var name in names)
        {
            Assert.Equal(name, model.Hook(name).Name);
        }
        Assert.Throws<ArgumentException>(() => HookNames.Attn(0, "reslut"));
        Assert.Throws<ArgumentException>(() => HookNames.Input(0, "x"));
    }

    [Fact]
    public void HooksOnPerHeadResultsAndInputsFireWithoutAskingForTheirOptions()
    {
        // These hooks exist but are only called when the forward computes per-head tensors; RunWithHooks now turns
        // that on for them, where it used to skip them silently.
        using var model = TinyModels.Create("gpt2");
        using var tokens = tensor(new long[,] { { 1, 5, 9, 2 } });
        long[]? result = null, qInput = null;
        using var plain = model.Forward(tokens);
        using var logits = model.RunWithHooks(tokens, [
            (HookNames.Result(0), (x, _) => { result = x.shape; return null; }),
            (HookNames.Input(0, 'q'), (x, _) => { qInput = x.shape; return null; }),
        ]);
        Assert.Equal([1L, 4, model.Config.NHeads, model.Config.DModel], result!);
        Assert.Equal([1L, 4, model.Config.NHeads, model.Config.DModel], qInput!);
        Assert.True((logits - plain).abs().max().item<float>() < 1e-4, "the options change what is computed, not the result");
    }
}
