using Pipelines.Activities.Circuits;
using Pipelines.Tests.Models;
using TorchSharp;
using static Pipelines.Tests.Circuits.CircuitFixtures;
using static TorchSharp.torch;

namespace Pipelines.Tests.Circuits;

public sealed class PositionalCircuitTests
{
    /// <summary>Two spans over positions 1–3 and 4–5 of the fixtures; position 0 (BOS) in none.</summary>
    private static Tensor TwoSpans()
    {
        var s = zeros(2, 2, 6);
        s[.., 0, 1..4] = tensor(1f);
        s[.., 1, 4..6] = tensor(1f);
        return s;
    }

    [Theory]
    [MemberData(nameof(TinyModels.All), MemberType = typeof(TinyModels))]
    public void FullPositionalCircuitIsTheCleanModelAndTheEmptyOneTheCorruptedModel(string architecture)
    {
        using var scope = NewDisposeScope();
        using var model = TinyModels.Create(architecture);
        model.to(ScalarType.Float64);
        var graph = ComputationGraph.For(model.Config);
        var run = new PositionalCircuitRun(model, graph);
        string[] spans = ["A", "B"];
        using var ablated = run.Capture(Corrupt, null);
        var (fullNc, fullCr) = PositionalCircuit.Full(graph, spans).Masks();
        var (emptyNc, emptyCr) = PositionalCircuit.Empty(graph, spans).Masks();
        var clean = model.Forward(Clean);
        var corrupted = model.Forward(Corrupt);
        var full = run.Run(Clean, null, TwoSpans(), ablated, fullNc, fullCr);
        var empty = run.Run(Clean, null, TwoSpans(), ablated, emptyNc, emptyCr);
        Assert.True((full - clean).abs().max().item<double>() < 1e-10);
        Assert.True((empty - corrupted).abs().max().item<double>() < 1e-10);
        Assert.True((clean - corrupted).abs().max().item<double>() > 1e-3);
    }

    [Fact]
    public void SearchGrowsFromTheLastSpansLogitsAndDropsNodesThatReachNoInput()
    {
        // One layer, one head, two spans. Scores favour: logits@B ← a0.h0@B (crossing from a0.h0.in@A ← input@A),
        // and logits@B ← m0@B, whose own inputs score nothing.
        var graph = new ComputationGraph(1, 1, parallelAttnMlp: false);
        string[] spans = ["A", "B"];
        var nc = new float[2, graph.NForward, graph.NBackward];
        var cr = new float[2, 2, 1, 3];
        int head = graph.HeadIndex(0, 0), mlp = graph.MlpIndex(0);
        nc[1, head, graph.LogitsIndex] = 5;
        nc[1, mlp, graph.LogitsIndex] = 4;
        cr[1, 0, 0, 1] = 3; // k-edge: a0.h0.in@A → a0.h0@B
        nc[0, 0, graph.HeadInputIndex(0, 0, 'v')] = 2; // input@A → a0.h0.in@A (through v)
        var grid = new PositionalGrid(nc, cr, spans, "sum");
        var names = (PositionalCircuit c) => c.Edges.Select(e => $"{e.Child.Name(spans)}->{e.Parent.Name(spans)}").Order().ToList();

        var top4 = PositionalCircuit.Search(graph, grid, 4, absolute: true);
        Assert.Equal(["a0.h0.in@A->a0.h0@B", "a0.h0@B->logits@B", "input@A->a0.h0.in@A"], names(top4)); // m0@B reaches no input: pruned
        // Sizes in full-graph edges for spans of 3 and 2 tokens: head→logits at B: 2; crossing A→B: 3·3·2; input→head-in at A: 3·3.
        Assert.Equal(2 + 18 + 9, top4.FullGraphEdges([3, 2]));
        Assert.Empty(PositionalCircuit.Search(graph, grid, 1, absolute: true).Edges); // logits@B ← a0.h0@B alone reaches no input
        var full = PositionalCircuit.Full(graph, spans);
        Assert.Equal(full.Edges.Count, full.Pruned().Edges.Count);
    }
}
