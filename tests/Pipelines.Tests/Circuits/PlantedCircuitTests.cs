using Pipelines.Activities.Circuits;
using Pipelines.Models.Transformer;
using Pipelines.Tests.Models;
using Xunit.Abstractions;
using static TorchSharp.torch;
using static Pipelines.Tests.Circuits.CircuitFixtures;

namespace Pipelines.Tests.Circuits;

public sealed class PlantedCircuitTests(ITestOutputHelper output)
{

    [Fact]
    public void AttributionRecoversAPlantedCircuit()
    {
        // Plant: only heads a0.h1 and a1.h3 write to the residual stream (every other W_O is zero) and the MLPs write
        // nothing. The task then provably runs through the edges among input, a0.h1, a1.h3 and logits, and nothing else.
        using var model = TinyModels.Create("gpt2");
        using (no_grad())
        {
            for (var l = 0; l < 2; l++)
            {
                for (var h = 0; h < 4; h++)
                {
                    if ((l, h) is not ((0, 1) or (1, 3)))
                    {
                        model.blocks[l].attn.W_O[h].zero_();
                    }
                }
                model.blocks[l].mlp.W_out.zero_();
                model.blocks[l].mlp.b_out!.zero_();
            }
        }
        var graph = ComputationGraph.For(model.Config);
        var sources = new[] { 0, graph.HeadIndex(0, 1), graph.HeadIndex(1, 3) };
        var planted = new HashSet<(int, int)>();
        foreach (var qkv in "qkv")
        {
            planted.Add((0, graph.HeadInputIndex(0, 1, qkv)));
            planted.Add((0, graph.HeadInputIndex(1, 3, qkv)));
            planted.Add((graph.HeadIndex(0, 1), graph.HeadInputIndex(1, 3, qkv)));
        }
        foreach (var s in sources)
        {
            planted.Add((s, graph.LogitsIndex));
        }
        // The logits and a1.h3's query matter only at the last position, where clean and corrupted tokens agree, so
        // the input's direct edges to them carry no difference: they are provably not part of the task's circuit.
        planted.Remove((0, graph.LogitsIndex));
        planted.Remove((0, graph.HeadInputIndex(1, 3, 'q')));

        var attribution = new EdgeAttribution(model, graph);
        foreach (var (method, scores) in new[] { ("EAP", attribution.Eap(Clean, Corrupt, Loss)), ("EAP-IG", attribution.EapIgInputs(Clean, Corrupt, Loss, 5)) })
        {
            using (scores)
            {
                var grid = ScoresFile.ToGrid(scores, graph);
                var auroc = PlantedCircuit.Auroc(graph, grid, planted);
                output.WriteLine($"{method}: AUROC {auroc:F3} against {planted.Count} planted of {graph.EdgeCount} edges");
                Assert.Equal(1.0, auroc, 6);
                var top = Circuit.TopN(graph, grid, planted.Count, absolute: true);
                Assert.All(graph.Edges().Where(e => top.Edges[e.F, e.B]), e => Assert.Contains(e, planted));
            }
        }
    }

    [Fact]
    public void AurocIsAHalfForUninformativeScoresAndZeroForReversedOnes()
    {
        var graph = new ComputationGraph(2, 2, false);
        var edges = graph.Edges().ToList();
        var planted = edges.Take(10).ToHashSet();
        var same = new float[graph.NForward, graph.NBackward];
        Assert.Equal(0.5, PlantedCircuit.Auroc(graph, same, planted), 12); // all tied
        var reversed = new float[graph.NForward, graph.NBackward];
        foreach (var (f, b) in edges.Skip(10))
        {
            reversed[f, b] = 1;
        }
        Assert.Equal(0.0, PlantedCircuit.Auroc(graph, reversed, planted), 12);
    }
}
