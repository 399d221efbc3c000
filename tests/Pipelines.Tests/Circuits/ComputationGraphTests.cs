using Pipelines.Activities.Circuits;

namespace Pipelines.Tests.Circuits;

public sealed class ComputationGraphTests
{
    [Theory]
    [InlineData(12, 12, false, 157, 445, 32_491)] // GPT-2 small (MIB's shipped ioi-eap-ig.json: 158 nodes, 32,491 edges)
    [InlineData(12, 12, true, 157, 445, 32_347)] // Pythia-160m: parallel blocks, MLP l does not read heads of l
    [InlineData(24, 14, false, 361, 1_033, 179_749)] // Qwen2.5-0.5B (GQA ungrouped: 14 query heads each get k/v edges)
    [InlineData(32, 32, false, 1_057, 3_105, 1_592_881)] // Llama-3.1-8B
    [InlineData(6, 4, false, 31, 79, 1_108)] // InterpBench IOI model
    public void GraphSizesMatchTheClosedForm(int layers, int heads, bool parallel, int nForward, int nBackward, long edges)
    {
        var g = new ComputationGraph(layers, heads, parallel);
        Assert.Equal(nForward, g.NForward);
        Assert.Equal(nBackward, g.NBackward);
        Assert.Equal(edges, g.EdgeCount);
        if (!parallel)
        {
            Assert.Equal(ComputationGraph.ClosedFormEdges(layers, heads), g.EdgeCount);
        }
        Assert.Equal(nForward + 1, g.NodeCount);
    }

    [Fact]
    public void GptTwoSmallHas158NodesAndNamesEdgesAsMib()
    {
        var g = new ComputationGraph(12, 12, false);
        Assert.Equal(158, g.NodeCount);
        Assert.Equal("input->a0.h1<q>", g.EdgeName(0, g.HeadInputIndex(0, 1, 'q')));
        Assert.Equal("a3.h2->m5", g.EdgeName(g.HeadIndex(3, 2), g.MlpInputIndex(5)));
        Assert.Equal("m11->logits", g.EdgeName(g.MlpIndex(11), g.LogitsIndex));
        Assert.True(g.IsRealEdge(g.HeadIndex(0, 3), g.MlpInputIndex(0))); // sequential: MLP 0 reads heads of layer 0
        Assert.False(g.IsRealEdge(g.HeadIndex(1, 0), g.HeadInputIndex(1, 0, 'v'))); // not its own layer's heads
        Assert.False(new ComputationGraph(12, 12, true).IsRealEdge(g.HeadIndex(0, 3), g.MlpInputIndex(0)));
        Assert.Equal(g.EdgeCount, g.Edges().LongCount());
        Assert.Equal(g.Edges().Count(), g.Edges().Select(e => g.EdgeName(e.F, e.B)).Distinct().Count());
    }
}
