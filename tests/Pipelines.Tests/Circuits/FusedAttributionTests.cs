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

    /// <summary>
    /// Δ is built only after the pairs' shared prefix. Prefixes of 0 (a pair differs at the first token), 3 (the rows
    /// differ at different positions: the earliest counts) and the whole sequence (identical pairs: zero scores) give
    /// the split path's scores.
    /// </summary>
    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    [InlineData(6)]
    public void ScoresAreExactWhateverThePairsShare(int prefix)
    {
        using var scope = NewDisposeScope();
        using var model = Create("gpt2");
        model.to(ScalarType.Float64);
        var graph = ComputationGraph.For(model.Config);
        var clean = Clean;
        var corrupt = clean.clone();
        if (prefix < 6)
        {
            corrupt[0, prefix] = tensor(11L);
            corrupt[1, 5] = tensor(12L);
        }
        Assert.Equal(prefix, FusedAttribution.SharedPrefix(clean, corrupt));
        var expected = new EdgeAttribution(model, graph, fused: false).EapIgInputs(clean, corrupt, Loss, 2);
        var actual = new FusedAttribution(model, graph).Integrated(clean, corrupt, Loss, [0.5, 1.0], null);
        var scale = expected.abs().max().item<double>();
        Assert.True((actual - expected).abs().max().item<double>() <= 1e-10 * Math.Max(scale, 1e-300), $"prefix {prefix}");
        Assert.Equal(prefix == 6, scale == 0);
    }

    [Fact]
    public void GqaModelsAreLeftToTheSplitPath() => Assert.False(FusedAttribution.Supports(TinyModels.Llama));
}
