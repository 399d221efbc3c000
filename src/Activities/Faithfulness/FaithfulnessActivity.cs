using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Circuits;
using Pipelines.Activities.Data;
using Pipelines.Activities.Models;
using Pipelines.Engine.Activities;
using static TorchSharp.torch;

namespace Pipelines.Activities.Faithfulness;

/// <summary>How circuits are chosen from the scores at each size.</summary>
public enum SelectionMethod { TopN, Greedy }

/// <summary>
/// MIB faithfulness: circuits of the top k % of edges over the grid, each run with out-of-circuit edges patched
/// from the counterfactual; f = (m(C) − m(∅)) / (m(N) − m(∅)); CPR over the signed ranking, CMD over |score|.
/// </summary>
[Activity("circuits.faithfulness", Version = 1, Category = "Faithfulness", Summary = "Faithfulness curve, CPR and CMD (MIB) of circuits chosen from edge scores")]
[Output("metrics", ArtifactKinds.Json, Help = "m(N), m(∅), CPR, CMD, both curves and per-example metrics of the full and empty circuits", MediaType = "application/json", FileName = "faithfulness.json")]
public sealed class FaithfulnessActivity : Activity<FaithfulnessActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("Counterfactual pairs to evaluate on (use other pairs than attribution did)", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("Edge scores from circuits.attribute", Kind = ArtifactKinds.Scores)]
        public required Artifact Scores { get; init; }

        [Input("Fractions of the edges to keep (default: MIB's grid 0.001 … 1)")]
        public IReadOnlyList<double> Fractions { get; init; } = FaithfulnessCurve.MibGrid;

        [Input("top-n (MIB) or greedy (grown from the logits)")]
        public SelectionMethod Selection { get; init; } = SelectionMethod.TopN;

        [Input("What out-of-circuit edges carry: counterfactual, mean, mean-positional or zero (means over this dataset's clean prompts)")]
        public AblationKind Ablation { get; init; } = AblationKind.Counterfactual;

        [Input("Pairs per batch", Minimum = 1, Maximum = 4096)]
        public int BatchSize { get; init; } = 32;

        [Input("Use at most this many pairs (0: all)", Minimum = 0)]
        public int Limit { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (input.Fractions.Count == 0 || input.Fractions.Any(f => f is < 0 or > 1))
        {
            throw new ActivityException("fractions must be between 0 and 1");
        }
        var (model, tokenizer) = ModelArtifacts.Open(input.Model);
        using (model)
        {
            var (graph, scores, _) = ScoresFile.Read(input.Scores.Path);
            if (graph.Layers != model.Config.NLayers || graph.Heads != model.Config.NHeads)
            {
                throw new ActivityException($"the scores are for a {graph.Layers}-layer, {graph.Heads}-head graph, but the model has {model.Config.NLayers} layers and {model.Config.NHeads} heads");
            }
            using var batch = CounterfactualBatch.FromRows(Jsonl.Read(input.Dataset.Path, "dataset", context), tokenizer, model.Config, input.Limit);
            var fractions = input.Fractions.Order().ToList();
            Circuit Choose(long n, bool absolute) => input.Selection == SelectionMethod.TopN
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
            var ablation = Circuits.Ablation.Prepare(input.Ablation, run, batch, input.BatchSize);
            var sums = new double[circuits.Count];
            var fullPer = new List<float>();
            var emptyPer = new List<float>();
            using var empty = run.EmptyCircuit();
            var masks = circuits.Select(c => c.Circuit.ToTensor()).ToList();
            for (var start = 0; start < batch.Count; start += input.BatchSize)
            {
                context.CancellationToken.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var n = Math.Min(input.BatchSize, batch.Count - start);
                var (clean, corrupted, mask, perExample) = batch.Slice(start, n);
                using var noGrad = no_grad();
                var ablated = ablation.Values(run, clean, corrupted, mask);
                fullPer.AddRange(perExample(model.Forward(clean, mask)).to(ScalarType.Float32).data<float>().ToArray());
                emptyPer.AddRange(perExample(run.Run(clean, ablated, empty, mask)).to(ScalarType.Float32).data<float>().ToArray());
                for (var i = 0; i < circuits.Count; i++)
                {
                    sums[i] += perExample(run.Run(clean, ablated, masks[i], mask)).sum().to(ScalarType.Float64).item<double>();
                }
                context.Report((double)(start + n) / batch.Count, $"{start + n} of {batch.Count} pairs");
            }
            foreach (var m in masks)
            {
                m.Dispose();
            }
            var mFull = fullPer.Average();
            var mEmpty = emptyPer.Average();
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
                    array.Add(new JsonObject { ["fraction"] = point.Fraction, ["edges"] = point.Edges, ["metric"] = Math.Round(point.Metric, 6), ["faithfulness"] = Math.Round(point.Faithfulness, 6) });
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
                ["edges"] = graph.EdgeCount,
                ["selection"] = input.Selection == SelectionMethod.TopN ? "top-n" : "greedy",
                ["ablation"] = Circuits.Ablation.Name(input.Ablation),
                ["mFull"] = Math.Round(mFull, 6),
                ["mEmpty"] = Math.Round(mEmpty, 6),
                ["cpr"] = Math.Round(FaithfulnessCurve.Cpr(signedPoints), 6),
                ["cmd"] = Math.Round(FaithfulnessCurve.Cmd(absolutePoints), 6),
                ["signed"] = signed,
                ["absolute"] = absoluteCurve,
                ["perExample"] = new JsonObject
                {
                    ["full"] = new JsonArray(fullPer.Select(v => (JsonNode?)Math.Round(v, 6)).ToArray()),
                    ["empty"] = new JsonArray(emptyPer.Select(v => (JsonNode?)Math.Round(v, 6)).ToArray()),
                },
            };
            File.WriteAllText(context.OutputFile("metrics"), result.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            context.Log($"CPR {result["cpr"]}, CMD {result["cmd"]} (m(N) {mFull:F3}, m(∅) {mEmpty:F3}) on {batch.Count} pairs");
        }
        return Task.CompletedTask;
    }
}
