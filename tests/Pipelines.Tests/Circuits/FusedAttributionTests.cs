using Pipelines.Activities.Circuits;
using Pipelines.Models.Transformer;
using Pipelines.Tests.Models;
using TorchSharp;
using static Pipelines.Tests.Circuits.CircuitFixtures;
using static TorchSharp.torch;

namespace Pipelines.Tests.Circuits;

public sealed class FusedAttributionTests
{
    public static IEnumerable<object[]> Models() => new[] { "gpt2", "gpt_neox", "llama-mha" }.Select(a => new object[] { a });

    private static HookedTransformer Create(string name) => name == "llama-mha"
        ? new HookedTransformer(TinyModels.Llama with { NKvHeads = 4 }).InitWeights(5, std: 0.2)
        : TinyModels.Create(name, seed: 5);

    /// <summary>
    /// The fused path maps gradients at projected q/k/v back through the norm's Jacobian; the split path reads them
    /// at per-head copies of the residual. Both must give the same scores for every method, with padding too.
    /// </summary>
    [Theory]
    [MemberData(nameof(Models))]
    public void FusedScoresEqualTheSplitInputPath(string architecture)
    {
        using var scope = NewDisposeScope();
        using var model = Create(architecture);
        model.to(ScalarType.Float64);
        var graph = ComputationGraph.For(model.Config);
        Assert.True(FusedAttribution.Supports(model.Config));
        var split = new EdgeAttribution(model, graph, fused: false);
        var fused = new FusedAttribution(model, graph);
        var mask = ones_like(Clean);
        mask[1, 5] = tensor(0L); // a padded position
        foreach (var (name, alphas) in new[] { ("eap", new[] { 1.0 }), ("eap-ig m=3", new[] { 1 / 3.0, 2 / 3.0, 1.0 }), ("clean-corrupted", new[] { 0.0, 1.0 }) })
        {
            var expected = name switch
            {
                "eap" => split.Eap(Clean, Corrupt, Loss, mask),
                "eap-ig m=3" => split.EapIgInputs(Clean, Corrupt, Loss, 3, mask),
                _ => split.CleanCorrupted(Clean, Corrupt, Loss, mask),
            };
            var actual = fused.Integrated(Clean, Corrupt, Loss, alphas, mask);
            var scale = expected.abs().max().item<double>();
            var worst = (actual - expected).abs().max().item<double>();
            Assert.True(scale > 1e-6, name);
            Assert.True(worst <= 1e-10 * scale, $"{architecture} {name}: max |fused − split| {worst:E3} vs {scale:E3}");
        }
    }

    [Fact]
    public void GqaModelsAreLeftToTheSplitPath() => Assert.False(FusedAttribution.Supports(TinyModels.Llama));
}
