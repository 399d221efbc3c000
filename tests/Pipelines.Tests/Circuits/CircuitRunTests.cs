using Pipelines.Models.Runtime;
using Pipelines.Activities.Circuits;
using Pipelines.Tests.Models;
using static TorchSharp.torch;
using static Pipelines.Tests.Circuits.CircuitFixtures;

namespace Pipelines.Tests.Circuits;

public sealed class CircuitRunTests
{

    private static float MaxDiff(Tensor a, Tensor b) => (a - b).abs().max().item<float>();

    [Theory]
    [MemberData(nameof(TinyModels.All), MemberType = typeof(TinyModels))]
    public void TheFullCircuitIsTheCleanModelAndTheEmptyOneTheCorruptedModel(string arch)
    {
        using var model = TinyModels.Create(arch);
        var graph = ComputationGraph.For(model.Config);
        var run = new CircuitRun(model, graph);
        using var ablated = run.SourceValues(Corrupt);
        using var clean = model.Forward(Clean);
        using var corrupt = model.Forward(Corrupt);
        using var full = run.Run(Clean, ablated, run.FullCircuit());
        using var empty = run.Run(Clean, ablated, run.EmptyCircuit());
        Assert.True(MaxDiff(full, clean) < 1e-4, $"full circuit differs from the clean run by {MaxDiff(full, clean)}");
        Assert.True(MaxDiff(empty, corrupt) < 1e-4, $"empty circuit differs from the corrupted run by {MaxDiff(empty, corrupt)}");
    }

    [Fact]
    public void RemovingOneEdgeToTheLogitsPatchesExactlyThatSourceIntoTheFinalResidual()
    {
        using var model = TinyModels.Create("gpt2");
        var graph = ComputationGraph.For(model.Config);
        var run = new CircuitRun(model, graph);
        using var ablated = run.SourceValues(Corrupt);
        using var circuit = run.FullCircuit();
        var last = graph.MlpIndex(graph.Layers - 1);
        circuit[last, graph.LogitsIndex] = tensor(false);
        using var patched = run.Run(Clean, ablated, circuit);

        var (_, cleanCache) = model.RunWithCache(Clean, n => n == "blocks.1.hook_mlp_out");
        var (_, corruptCache) = model.RunWithCache(Corrupt, n => n == "blocks.1.hook_mlp_out");
        using (cleanCache)
        using (corruptCache)
        {
            var delta = corruptCache["blocks.1.hook_mlp_out"] - cleanCache["blocks.1.hook_mlp_out"];
            using var byHand = model.RunWithHooks(Clean, [("blocks.1.hook_resid_post", (x, _) => x.Plus(delta))]);
            Assert.True(MaxDiff(patched, byHand) < 1e-5);
        }
    }

    [Fact]
    public void FaithfulnessIsOneForTheFullCircuitAndZeroForTheEmptyOne()
    {
        using var model = TinyModels.Create("llama");
        var run = new CircuitRun(model, ComputationGraph.For(model.Config));
        using var ablated = run.SourceValues(Corrupt);
        using var last = tensor(new long[] { 5, 5 });
        using var correct = tensor(new long[] { 9, 8 });
        using var incorrect = tensor(new long[] { 4, 3 });
        double Metric(Tensor circuit)
        {
            using var logits = run.Run(Clean, ablated, circuit);
            return CircuitRun.LogitDifference(logits, last, correct, incorrect).mean().item<float>();
        }
        var full = Metric(run.FullCircuit());
        var empty = Metric(run.EmptyCircuit());
        Assert.NotEqual(full, empty);
        Assert.Equal(1.0, (full - empty) / (full - empty), 6);
        using var clean = model.Forward(Clean);
        Assert.Equal(CircuitRun.LogitDifference(clean, last, correct, incorrect).mean().item<float>(), full, 4);
    }
}
