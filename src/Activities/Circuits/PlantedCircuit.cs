namespace Pipelines.Activities.Circuits;

/// <summary>Agreement of edge scores with a known (planted) circuit.</summary>
public static class PlantedCircuit
{
    /// <summary>
    /// AUROC of ranking the real edges by score (|score| when <paramref name="absolute"/>) against the planted set:
    /// the probability that a planted edge outranks an unplanted one, ties counting half (Mann–Whitney). This is the
    /// exact area under the full ROC curve; MIB samples the curve at its edge-fraction grid instead.
    /// </summary>
    public static double Auroc(ComputationGraph graph, float[,] scores, IReadOnlySet<(int F, int B)> planted, bool absolute = true)
    {
        var items = graph.Edges().Select(e => (Score: absolute ? Math.Abs(scores[e.F, e.B]) : scores[e.F, e.B], Planted: planted.Contains(e))).ToList();
        var positives = items.Count(i => i.Planted);
        var negatives = items.Count - positives;
        if (positives == 0 || negatives == 0)
        {
            return double.NaN;
        }
        // Average ranks (1-based, ascending), ties sharing their mean rank.
        var ordered = items.Select((item, i) => (item, i)).OrderBy(x => x.item.Score).ToList();
        var ranks = new double[items.Count];
        for (var start = 0; start < ordered.Count;)
        {
            var end = start;
            while (end + 1 < ordered.Count && ordered[end + 1].item.Score == ordered[start].item.Score)
            {
                end++;
            }
            for (var k = start; k <= end; k++)
            {
                ranks[ordered[k].i] = (start + end) / 2.0 + 1;
            }
            start = end + 1;
        }
        var positiveRanks = items.Select((item, i) => item.Planted ? ranks[i] : 0).Sum();
        return (positiveRanks - positives * (positives + 1) / 2.0) / ((double)positives * negatives);
    }
}
