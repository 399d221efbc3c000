using Pipelines.Models.Runtime;
using Pipelines.Activities.Circuits;
using Pipelines.Models.Transformer;
using TorchSharp;
using Pipelines.Tests.Models;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static Pipelines.Tests.Circuits.CircuitFixtures;

namespace Pipelines.Tests.Circuits;

public sealed class AttributionTests(ITestOutputHelper output)
{

    [Fact]
    public void EapEqualsExactPatchingWhereTheModelIsLinearInTheEdges()
    {
        // RMSNorm with a huge epsilon divides by a near-constant √eps: every norm is linear, attention patterns are
        // uniform (q·k ≈ 0), and the gated MLP is second order. The model is linear in each edge, so the first-order
        // estimate (EAP) must equal real patching.
        var config = TinyModels.Llama with { NormEps = 1e8, NKvHeads = 4 };
        using var model = new HookedTransformer(config).InitWeights(3, std: 0.5);
        model.to(ScalarType.Float64); // the effects are tiny (everything is divided by √eps): compare in f64
        var graph = ComputationGraph.For(config);
        var attribution = new EdgeAttribution(model, graph);
        using var eap = attribution.Eap(Clean, Corrupt, Loss);
        using var exact = attribution.Exact(Clean, Corrupt, Loss);
        var scale = exact.abs().max().item<double>();
        var worst = (eap - exact).abs().max().item<double>();
        output.WriteLine($"{graph.EdgeCount} edges, max |exact| {scale:E3}, max |EAP − exact| {worst:E3}");
        foreach (var (f, b) in graph.Edges().OrderByDescending(e => Math.Abs(exact[e.F, e.B].item<double>() - eap[e.F, e.B].item<double>())).Take(8))
        {
            output.WriteLine($"  {graph.EdgeName(f, b),-22} exact {exact[f, b].item<double>():E3}  eap {eap[f, b].item<double>():E3}");
        }
        Assert.True(scale > 0);
        Assert.True(worst <= 1e-3 * scale, $"max |EAP − exact| {worst} vs max |exact| {scale}");
    }

    [Fact]
    public void OnANonlinearModelEapAndExactDifferButAgreeOnTheDirectEdgesToTheLogitsInSign()
    {
        using var model = TinyModels.Create("gpt2");
        var graph = ComputationGraph.For(model.Config);
        var attribution = new EdgeAttribution(model, graph);
        using var eap = attribution.Eap(Clean, Corrupt, Loss);
        using var exact = attribution.Exact(Clean, Corrupt, Loss);
        Assert.True((eap - exact).abs().max().item<float>() > 1e-4, "a nonlinear model should show first-order error");
        // Scores sit only on real edges.
        for (var b = 0; b < graph.NBackward; b++)
        {
            Assert.Equal(0f, eap[graph.PrevIndex(b).., b].abs().sum().item<float>());
        }
        using var corr = stack([eap.flatten(), exact.flatten()]).corrcoef();
        output.WriteLine($"correlation EAP vs exact: {corr[0, 1].item<float>():F3}");
        Assert.True(corr[0, 1].item<float>() > 0.5);
    }

    [Fact]
    public void EapIgWithOneStepIsEapAndIntegratedInputEdgesApproachTheExactTotalEffect()
    {
        using var model = TinyModels.Create("gpt2");
        model.to(ScalarType.Float64);
        var graph = ComputationGraph.For(model.Config);
        var attribution = new EdgeAttribution(model, graph);
        using var eap = attribution.Eap(Clean, Corrupt, Loss);
        using var ig1 = attribution.EapIgInputs(Clean, Corrupt, Loss, steps: 1);
        Assert.Equal(0.0, (eap - ig1).abs().max().item<double>(), 12);

        // Completeness: only the input node differs between the runs, so patching all of its edges exactly is the
        // corrupted run. Σ_v s(input→v) is a Riemann sum of ∫ ∂ℒ/∂e · (e' − e) dα → ℒ(corrupted) − ℒ(clean).
        using var clean = model.Forward(Clean);
        using var corrupt = model.Forward(Corrupt);
        var exactTotal = Loss(corrupt).item<double>() - Loss(clean).item<double>();
        var errors = new List<double>();
        foreach (var m in new[] { 1, 4, 16, 64 })
        {
            using var ig = attribution.EapIgInputs(Clean, Corrupt, Loss, steps: m);
            var total = ig[0].sum().item<double>();
            errors.Add(Math.Abs(total - exactTotal));
            output.WriteLine($"m = {m,2}: Σ s(input→·) = {total:F6}, exact total effect {exactTotal:F6}, error {errors[^1]:E2}");
        }
        for (var i = 1; i < errors.Count; i++)
        {
            Assert.True(errors[i] < errors[i - 1], "the error should shrink as m grows");
        }
        Assert.True(errors[^1] < 0.02 * Math.Abs(exactTotal) + 1e-9, $"m = 64 error {errors[^1]} vs total {exactTotal}");

        using var cc = attribution.CleanCorrupted(Clean, Corrupt, Loss);
        Assert.True((cc - eap).abs().max().item<double>() > 0); // averages in the corrupted-point gradient
    }
}

public sealed class IgActivationsTests
{
    [Fact]
    public void WithOneStepItIsEapAndOnALinearModelItIsExactPatching()
    {
        using (var model = TinyModels.Create("llama"))
        {
            model.to(ScalarType.Float64);
            var attribution = new EdgeAttribution(model, ComputationGraph.For(model.Config));
            using var eap = attribution.Eap(Clean, Corrupt, Loss);
            using var one = attribution.EapIgActivations(Clean, Corrupt, Loss, steps: 1);
            Assert.True((eap - one).abs().max().item<double>() < 1e-12, "m = 1 replaces each group by its own clean value: EAP");
            using var five = attribution.EapIgActivations(Clean, Corrupt, Loss, steps: 5);
            using var inputs = attribution.EapIgInputs(Clean, Corrupt, Loss, steps: 3); // rotary: no W_pos to carry grad
            Assert.True(inputs.abs().max().item<double>() > 0);
            Assert.True((eap - five).abs().max().item<double>() > 1e-9, "on a nonlinear model the interpolation changes the scores");
        }
        var config = TinyModels.Llama with { NormEps = 1e8, NKvHeads = 4 };
        using var linear = new HookedTransformer(config).InitWeights(3, std: 0.5);
        linear.to(ScalarType.Float64);
        var linearAttribution = new EdgeAttribution(linear, ComputationGraph.For(config));
        using var exact = linearAttribution.Exact(Clean, Corrupt, Loss);
        using var ig = linearAttribution.EapIgActivations(Clean, Corrupt, Loss, steps: 3);
        var scale = exact.abs().max().item<double>();
        Assert.True((ig - exact).abs().max().item<double>() <= 1e-3 * scale);
    }
}

public sealed class AblationTests
{

    private static CounterfactualBatch Batch(HookedTransformer model)
    {
        var words = new Pipelines.Models.Tokenizers.WordLevelTokenizer(Enumerable.Range(0, 50).ToDictionary(i => $"w{i}", i => i), "w0", 1, null, 0);
        var rows = new List<System.Text.Json.Nodes.JsonObject>
        {
            new() { ["clean"] = "w5 w9 w2 w7 w3", ["corrupted"] = "w5 w4 w2 w7 w3", ["correct"] = "w9", ["incorrect"] = "w4" },
            new() { ["clean"] = "w8 w8 w4", ["corrupted"] = "w8 w3 w4", ["correct"] = "w8", ["incorrect"] = "w3" }, // shorter: right-padded
        };
        return CounterfactualBatch.FromRows(rows, words, model.Config);
    }

    [Fact]
    public void MeanAblationAveragesEverySourceOverRealPositionsAndExamples()
    {
        using var model = TinyModels.Create("gpt2");
        var graph = ComputationGraph.For(model.Config);
        var run = new CircuitRun(model, graph);
        using var batch = Batch(model);
        var mean = Ablation.Prepare(AblationKind.Mean, run, batch, batchSize: 1);
        var (clean, corrupted, mask, _) = batch.Slice(0, 2);
        using var values = run.SourceValues(clean, mask);
        using var ablated = mean.Values(run, clean, corrupted, mask);
        // By hand: 6 real positions in row 0 (BOS + 5 words) and 4 in row 1; padding excluded.
        var expected = values[0, ..6].sum(0L).Plus(values[1, ..4].sum(0L)).div(Scalars.Int(10));
        Assert.True((ablated[1, 5] - expected).abs().max().item<float>() < 1e-5,
            $"abl {string.Join(",", ablated[1, 5, 3, ..4].data<float>().ToArray())} exp {string.Join(",", expected[3, ..4].data<float>().ToArray())} abl0 {string.Join(",", ablated[0, 0, 3, ..4].data<float>().ToArray())} v {string.Join(",", values[0, 0, 3, ..4].data<float>().ToArray())} shape {string.Join(",", ablated.shape)} diff {(ablated[1, 5] - expected).abs().max().item<float>()} mask {string.Join(",", mask.data<long>().ToArray())} scale {expected.abs().max().item<float>()}");
        Assert.True((ablated[0, 0] - expected).abs().max().item<float>() < 1e-5);
        using var zero = Ablation.Prepare(AblationKind.Zero, run, batch, 8).Values(run, clean, corrupted, mask);
        Assert.Equal(0f, zero.abs().max().item<float>());
    }

    [Fact]
    public void WithZeroAndMeanAblationTheFullCircuitIsCleanAndEapMatchesExactOnALinearModel()
    {
        var config = TinyModels.Llama with { NormEps = 1e8, NKvHeads = 4 };
        using var model = new HookedTransformer(config).InitWeights(3, std: 0.5);
        model.to(ScalarType.Float64);
        var graph = ComputationGraph.For(config);
        var run = new CircuitRun(model, graph);
        var attribution = new EdgeAttribution(model, graph);
        using var clean = model.Forward(Clean);
        foreach (var kind in new[] { AblationKind.Zero, AblationKind.Mean })
        {
            using var scope = NewDisposeScope();
            var ablated = kind == AblationKind.Zero
                ? run.SourceValues(Clean).zero_()
                : run.SourceValues(Clean).mean([0L, 1L], keepdim: true).expand(2, 6, -1, -1).clone();
            Assert.True((run.Run(Clean, ablated, run.FullCircuit()) - clean).abs().max().item<double>() < 1e-12);
            var eap = attribution.EapAblated(Clean, ablated, Loss);
            var exact = attribution.ExactAblated(Clean, ablated, Loss);
            var scale = exact.abs().max().item<double>();
            Assert.True(scale > 0);
            Assert.True((eap - exact).abs().max().item<double>() <= 1e-3 * scale, $"{kind}: EAP differs from exact patching");
        }
    }
}
