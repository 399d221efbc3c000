using Pipelines.Models.Runtime;
using System.Text.Json.Nodes;
using Pipelines.Activities.Circuits;
using Pipelines.Engine.Activities;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits.Faithfulness;

/// <summary>PEAP's faithfulness of positional circuits, as a library call (no engine needed).</summary>
public static class PositionalFaithfulness
{
    /// <summary>
    /// PEAP's evaluation of positional circuits at each size: soft faithfulness M(C)/M(N), hard faithfulness (the
    /// fraction of examples whose top-1 token at the last position is the model's), the MIB-normalized
    /// (M(C) − M(∅))/(M(N) − M(∅)), and the size in full-graph edges averaged over examples. Out-of-circuit edges carry
    /// the counterfactual run's values (PEAP evaluates with mean ablation over an ablation split; see the README).
    /// </summary>
    public static JsonObject Evaluate(HookedTransformer model, ComputationGraph graph, CounterfactualBatch batch, string scoresDirectory, FaithfulnessSettings settings,
        Action<double, string>? report = null, Action<string>? log = null, CancellationToken ct = default)
    {
        var positional = ScoresIndex.Read(Path.Combine(scoresDirectory, "index.json")).Info.Positional
            ?? throw new ActivityException("the scores have positional.safetensors but their index names no spans");
        var spans = positional.Spans;
        if (positional.Mode == "positions")
        {
            batch.UsePositionsAsSpans(model.Config.DefaultPrependBos ? 1 : 0);
        }
        if (batch.Spans is null || !batch.SpanTitles.SequenceEqual(spans))
        {
            throw new ActivityException($"the scores are positional over spans {string.Join(", ", spans)}; the dataset's rows must carry the same schema's spans (got {(batch.Spans is null ? "none" : string.Join(", ", batch.SpanTitles))})");
        }
        var grid = PositionalScoresFile.Read(scoresDirectory, spans, settings.Statistic);
        var sizes = settings.TopK.Where(k => k > 0).Distinct().Order().ToList();
        var circuits = sizes.Select(k => PositionalCircuit.Search(graph, grid, k, absolute: true)).ToList();
        var masks = circuits.Select(c => c.Masks()).ToList();
        var (emptyNc, emptyCr) = PositionalCircuit.Empty(graph, spans).Masks();
        var run = new PositionalCircuitRun(model, graph);
        var metric = new double[circuits.Count];
        var agree = new int[circuits.Count];
        var fullGraphEdges = new double[circuits.Count];
        double mFull = 0, mEmpty = 0;
        var spanLengths = batch.Spans.sum(-1).to(ScalarType.Int32).data<int>().ToArray(); // [N·S]
        foreach (var (start, n) in batch.Batches(settings.BatchSize, ct))
        {
            using var scope = NewDisposeScope();
            var (clean, corrupted, mask, perExample) = batch.Slice(start, n);
            var spanMask = batch.SpanSlice(start, n);
            using var noGrad = no_grad();
            using var ablated = run.Capture(corrupted, mask);
            var rows = Scalars.Range(n);
            var last = batch.Last[TensorIndex.Slice(start, start + n)];
            var logits = model.Forward(clean, mask);
            var top = logits[rows, last].argmax(-1);
            mFull += perExample(logits).sum().to(ScalarType.Float64).item<double>();
            mEmpty += perExample(run.Run(clean, mask, spanMask, ablated, emptyNc, emptyCr)).sum().to(ScalarType.Float64).item<double>();
            for (var i = 0; i < circuits.Count; i++)
            {
                var circuitLogits = run.Run(clean, mask, spanMask, ablated, masks[i].NonCrossing, masks[i].Crossing);
                metric[i] += perExample(circuitLogits).sum().to(ScalarType.Float64).item<double>();
                agree[i] += (int)circuitLogits[rows, last].argmax(-1).eq(top).sum().item<long>();
            }
            report?.Invoke((double)(start + n) / batch.Count, $"positional circuits: {start + n} of {batch.Count} pairs");
        }
        for (var i = 0; i < circuits.Count; i++)
        {
            for (var r = 0; r < batch.Count; r++)
            {
                fullGraphEdges[i] += circuits[i].FullGraphEdges(spanLengths.AsSpan(r * spans.Count, spans.Count).ToArray());
            }
        }
        foreach (var (nc, cr) in masks)
        {
            nc.Dispose();
            cr.Dispose();
        }
        emptyNc.Dispose();
        emptyCr.Dispose();
        var count = batch.Count;
        mFull /= count;
        mEmpty /= count;
        var curve = new JsonArray();
        for (var i = 0; i < circuits.Count; i++)
        {
            var m = metric[i] / count;
            curve.Add(new JsonObject
            {
                ["topK"] = sizes[i],
                ["abstractEdges"] = circuits[i].Edges.Count,
                ["fullGraphEdges"] = Math.Round(fullGraphEdges[i] / count, 2),
                ["metric"] = JsonNumbers.Round(m),
                ["soft"] = JsonNumbers.Round(m / mFull),
                ["hard"] = JsonNumbers.Round((double)agree[i] / count),
                ["normalized"] = JsonNumbers.Round(FaithfulnessCurve.Faithfulness(m, mEmpty, mFull)),
            });
        }
        log?.Invoke($"positional circuits: {string.Join(", ", curve.Select(c => $"top {c!["topK"]}: soft {c["soft"]}, hard {c["hard"]}"))}");
        return new JsonObject
        {
            ["spans"] = new JsonArray(spans.Select(x => (JsonNode)x).ToArray()),
            ["statistic"] = settings.Statistic,
            ["search"] = "peap-greedy, |score|",
            ["ablation"] = "counterfactual",
            ["mFull"] = JsonNumbers.Round(mFull),
            ["mEmpty"] = JsonNumbers.Round(mEmpty),
            ["curve"] = curve,
        };
    }
}
