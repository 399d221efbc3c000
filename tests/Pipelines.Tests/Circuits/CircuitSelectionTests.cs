using Pipelines.Activities.Circuits;

namespace Pipelines.Tests.Circuits;

public sealed class CircuitSelectionTests
{
    // One layer, one head: sources input(0), a0.h0(1), m0(2); destinations a0.h0<q>(0), <k>(1), <v>(2), m0(3), logits(4).
    private static readonly ComputationGraph G = new(1, 1, false);

    private static float[,] Scores(params (string Edge, float Score)[] edges)
    {
        var s = new float[G.NForward, G.NBackward];
        foreach (var (f, b) in G.Edges())
        {
            var match = edges.FirstOrDefault(e => e.Edge == G.EdgeName(f, b));
            s[f, b] = match.Edge is null ? 0.001f * (f + 1) : match.Score;
        }
        return s;
    }

    private static string[] Names(Circuit c) => G.Edges().Where(e => c.Edges[e.F, e.B]).Select(e => G.EdgeName(e.F, e.B)).ToArray();

    [Fact]
    public void TheTinyGraphHasEightEdges() => Assert.Equal(8, G.EdgeCount);

    [Fact]
    public void PruningRemovesNodesWithoutAPathAndRunsToAFixpointOnEdgesToo()
    {
        // Top-1 is a0.h0->m0: m0 has no outgoing edge, so it goes; then a0.h0 has no outgoing edge either.
        // (Stopping when only the node set is unchanged would leave a dangling edge: the upstream bug.)
        var top1 = Circuit.TopN(G, Scores(("a0.h0->m0", 5)), 1, absolute: false);
        Assert.Empty(Names(top1));
        // A head with an outgoing edge but no incoming edge is removed too.
        Assert.Empty(Names(Circuit.TopN(G, Scores(("a0.h0->logits", 5)), 1, absolute: false)));
        // A real path input -> a0.h0<v> -> logits survives.
        var path = Circuit.TopN(G, Scores(("a0.h0->logits", 5), ("input->a0.h0<v>", 4)), 2, absolute: false);
        Assert.Equal(["input->a0.h0<v>", "a0.h0->logits"], Names(path));
    }

    [Fact]
    public void SignedAndAbsoluteRankingsDiffer()
    {
        var scores = Scores(("input->logits", -9), ("m0->logits", 3), ("input->m0", 2));
        Assert.Equal(["input->m0", "m0->logits"], Names(Circuit.TopN(G, scores, 2, absolute: false)));
        Assert.Equal(["input->logits"], Names(Circuit.TopN(G, scores, 2, absolute: true))); // |−9| first; m0->logits alone is pruned
    }

    [Fact]
    public void GreedyGrowsFromTheLogits()
    {
        // The best edge overall feeds m0, which is not reachable until an edge m0->logits is in.
        var scores = Scores(("a0.h0->m0", 9), ("m0->logits", 1), ("input->logits", 2), ("input->a0.h0<q>", 8));
        var greedy = Circuit.Greedy(G, scores, 3, absolute: false);
        // Step 1: best edge into logits is input->logits (2) ... then m0->logits (1), then a0.h0->m0 (9);
        // a0.h0 has no incoming edge after 3 steps, so pruning removes a0.h0->m0, and m0 with it.
        Assert.Equal(["input->logits"], Names(greedy));
        var more = Circuit.Greedy(G, scores, 4, absolute: false); // + input->a0.h0<q> (8): the path is complete
        Assert.Equal(["input->a0.h0<q>", "a0.h0->m0", "input->logits", "m0->logits"], Names(more));
    }

    [Fact]
    public void PruningIsIdempotentAndTheFullGraphIsUnchanged()
    {
        var big = new ComputationGraph(3, 4, false);
        var random = new Random(4);
        var scores = new float[big.NForward, big.NBackward];
        foreach (var (f, b) in big.Edges())
        {
            scores[f, b] = (float)(random.NextDouble() - 0.5);
        }
        foreach (var n in new[] { 5, 30, 120 })
        {
            var c = Circuit.TopN(big, scores, n, absolute: true);
            var before = (bool[,])c.Edges.Clone();
            c.Prune();
            Assert.Equal(before.Cast<bool>(), c.Edges.Cast<bool>());
            Assert.True(c.EdgeCount <= n);
            var alive = c.AliveSources();
            foreach (var (f, b) in big.Edges().Where(e => c.Edges[e.F, e.B]))
            {
                Assert.True(alive[f]);
            }
        }
        var full = Circuit.Full(big);
        full.Prune();
        Assert.Equal(big.EdgeCount, full.EdgeCount);
    }
}
