using System.Text.Json.Nodes;
using Pipelines.Activities.Circuits;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits.Faithfulness;

/// <summary>What a faithfulness evaluation runs: the circuit sizes, how circuits are chosen, and what out-of-circuit edges carry.</summary>
public sealed record FaithfulnessSettings
{
    public IReadOnlyList<double> Fractions { get; init; } = FaithfulnessCurve.MibGrid;
    public SelectionMethod Selection { get; init; } = SelectionMethod.TopN;
    public AblationKind Ablation { get; init; } = AblationKind.Counterfactual;
    public int BatchSize { get; init; } = 32;
    /// <summary>Positional (PEAP) circuit sizes, in abstract edges.</summary>
    public IReadOnlyList<int> TopK { get; init; } = [5, 10, 20, 50, 100, 200, 500];
    /// <summary>Positional: the span statistic to rank by.</summary>
    public string Statistic { get; init; } = "sum";
}

/// <summary>
/// MIB faithfulness, as a library call (no engine needed): circuits of the top k % of edges over the grid, each run
/// with out-of-circuit edges patched from the counterfactual (or the chosen ablation); f = (m(C) − m(∅)) / (m(N) − m(∅));
/// CPR over the signed ranking, CMD over |score|; "defined": false with the reason when m(N) ≈ m(∅).
/// Returns the <c>faithfulness.json</c> document.
/// </summary>
public static class MibFaithfulness
{
    public static JsonObject Evaluate(HookedTransformer model, ComputationGraph graph, float[,] scores, CounterfactualBatch batch,
        FaithfulnessSettings settings, Action<double, string>? report = null, CancellationToken ct = default)
    {
        var fractions = settings.Fractions.Order().ToList();
        Circuit Choose(long n, bool absolute) => settings.Selection == SelectionMethod.TopN
            ? Circuit.TopN(graph, scores, n, absolute)
            : Circuit.Greedy(graph, scores, n, absolute);
        var circuits = new List<(bool Absolute, double Fraction, Circuit Circuit)>();
        foreach (var absolute in new[] { false, true })
        {
            foreach (var fraction in fractions)
            {
                circuits.Add((absolute, fraction, Choose((long)(fraction * graph.EdgeCount), absolute)));
            }
        }
        var run = new CircuitRun(model, graph);
        var ablation = Circuits.Ablation.Prepare(settings.Ablation, run, batch, settings.BatchSize);
        var sums = new double[circuits.Count];
        var fullPer = new List<float>();
        var emptyPer = new List<float>();
        using var empty = run.EmptyCircuit();
        var masks = circuits.Select(c => c.Circuit.ToTensor()).ToList();
        foreach (var (start, n) in batch.Batches(settings.BatchSize, ct))
        {
            using var scope = NewDisposeScope();
            var (clean, corrupted, mask, perExample) = batch.Slice(start, n);
            using var noGrad = no_grad();
            var ablated = ablation.Values(run, clean, corrupted, mask);
            fullPer.AddRange(perExample(model.Forward(clean, mask)).to(ScalarType.Float32).data<float>().ToArray());
            emptyPer.AddRange(perExample(run.Run(clean, ablated, empty, mask)).to(ScalarType.Float32).data<float>().ToArray());
            for (var i = 0; i < circuits.Count; i++)
            {
                sums[i] += perExample(run.Run(clean, ablated, masks[i], mask)).sum().to(ScalarType.Float64).item<double>();
            }
            report?.Invoke((double)(start + n) / batch.Count, $"{start + n} of {batch.Count} pairs");
        }
        foreach (var m in masks)
        {
            m.Dispose();
        }
        var mFull = fullPer.Average();
        var mEmpty = emptyPer.Average();
        var undefined = FaithfulnessCurve.UndefinedReason(fullPer, emptyPer);
        JsonArray Curve(bool absolute, out List<CurvePoint> points)
        {
            points = [];
            var array = new JsonArray();
            for (var i = 0; i < circuits.Count; i++)
            {
                if (circuits[i].Absolute != absolute)
                {
                    continue;
                }
                var metric = sums[i] / batch.Count;
                var point = new CurvePoint(circuits[i].Fraction, FaithfulnessCurve.Faithfulness(metric, mEmpty, mFull), circuits[i].Circuit.EdgeCount, metric);
                points.Add(point);
                array.Add(new JsonObject { ["fraction"] = point.Fraction, ["edges"] = point.Edges, ["metric"] = JsonNumbers.Round(point.Metric), ["faithfulness"] = undefined is null ? JsonNumbers.Round(point.Faithfulness) : null });
            }
            return array;
        }
        var signed = Curve(false, out var signedPoints);
        var absoluteCurve = Curve(true, out var absolutePoints);
        var result = new JsonObject
        {
            ["metric"] = batch.MetricName,
            ["pairs"] = batch.Count,
            ["droppedUnequalLength"] = batch.Dropped,
            ["droppedIdentical"] = batch.DroppedIdentical,
            ["edges"] = graph.EdgeCount,
            ["selection"] = settings.Selection == SelectionMethod.TopN ? "top-n" : "greedy",
            ["ablation"] = Circuits.Ablation.Name(settings.Ablation),
            ["mFull"] = JsonNumbers.Round(mFull),
            ["mEmpty"] = JsonNumbers.Round(mEmpty),
            ["defined"] = undefined is null,
            ["undefinedReason"] = undefined,
            ["cpr"] = undefined is null ? JsonNumbers.Round(FaithfulnessCurve.Cpr(signedPoints)) : null,
            ["cmd"] = undefined is null ? JsonNumbers.Round(FaithfulnessCurve.Cmd(absolutePoints)) : null,
            ["signed"] = signed,
            ["absolute"] = absoluteCurve,
            ["perExample"] = new JsonObject
            {
                ["full"] = new JsonArray(fullPer.Select(v => JsonNumbers.Round(v)).ToArray()),
                ["empty"] = new JsonArray(emptyPer.Select(v => JsonNumbers.Round(v)).ToArray()),
            },
        };
        return result;
    }
}
