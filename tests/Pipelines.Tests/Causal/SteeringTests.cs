using Pipelines.Activities.Causal;
using Pipelines.Models.Transformer;
using Pipelines.Tests.Models;
using Xunit;
using static TorchSharp.torch;

namespace Pipelines.Tests.Causal;

/// <summary>Steering vectors checked against what they must equal on a random tiny GPT-2.</summary>
public sealed class SteeringTests
{
    private static readonly HookedTransformer Model = TinyModels.Create("gpt2", seed: 6);
    private static readonly ActivationCollector Collector = new(Model, PatchingTests.Words);

    private static int Id(string w) => PatchingTests.Words.TokenToId(w)!.Value;

    [Fact]
    public void TheDifferenceOfMeansAtTheEmbeddingIsTheDifferenceOfTheTwoWordsEmbeddings()
    {
        using var vector = Steering.Build(Collector, SteeringMethod.MeanDiff, PatchHook.ResidPre, [0, 1], ["w4 w9 w12", "w5 w9 w12", "w6 w9 w12"], ["w4 w9 w13", "w5 w9 w13", "w6 w9 w13"], -1);
        using var expected = Model.W_E[Id("w12")] - Model.W_E[Id("w13")];
        Assert.True(vector.Vectors[0].allclose(expected, rtol: 1e-4, atol: 1e-5), "resid_pre 0 at the last token is its embedding plus the position's");
        Assert.True(vector.Norms[0] > 0);
    }

    [Fact]
    public void ActAddAtTheFrontTurnsTheNegativePromptIntoThePositiveOneAndScaleZeroChangesNothing()
    {
        using var vector = Steering.Build(Collector, SteeringMethod.Actadd, PatchHook.ResidPre, [0], ["w5 w6"], ["w7 w6"], -1);
        Assert.Equal(3, vector.Vectors[0].shape[0]); // BOS, w5/w7, w6
        var negative = Collector.Ids("w7 w6 w20 w21");
        var positive = Collector.Ids("w5 w6 w20 w21");
        var neutral = new List<IReadOnlyList<int>> { Collector.Ids("w30 w31 w32 w33") };
        var steered = Steering.Evaluate(Model, Collector, vector, 0, [0, 1], [(negative, Id("w9"), Id("w10"))], neutral);
        var reference = Steering.Evaluate(Model, Collector, vector, 0, [0], [(positive, Id("w9"), Id("w10"))], neutral);
        Assert.NotEqual(reference[0].Effect, steered[0].Effect, 3);
        Assert.Equal(reference[0].Effect, steered[1].Effect, 4); // c = 1 adds h(p⁺) − h(p⁻) at the front: the input becomes p⁺
        Assert.Equal(0.0, steered[0].Kl, 6);
        Assert.True(steered[1].Kl > 0);
        Assert.Equal(steered[0].Perplexity, reference[0].Perplexity, 4);
    }

    [Fact]
    public void AVectorRoundTripsThroughItsFile()
    {
        using var vector = Steering.Build(Collector, SteeringMethod.MeanDiff, PatchHook.MlpOut, [1], ["w4 w9"], ["w5 w9"], -1);
        var path = Path.Combine(Path.GetTempPath(), $"vector-{Guid.NewGuid():N}.safetensors");
        try
        {
            vector.Write(path);
            using var back = SteeringVector.Read(path);
            Assert.Equal(PatchHook.MlpOut, back.Hook);
            Assert.Equal([1], back.Layers);
            Assert.True(back.Vectors[1].allclose(vector.Vectors[1]));
            Assert.Equal(vector.Norms[1], back.Norms[1], 10);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
