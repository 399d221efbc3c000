using System.Text.Json;
using FluentValidation;
using System.Text.Json.Nodes;
using Pipelines.Activities.Circuits;
using Pipelines.Activities.Data;
using Pipelines.Activities.Models;
using Pipelines.Engine.Activities;
using static TorchSharp.torch;

namespace Pipelines.Activities.Faithfulness;

/// <summary>
/// MIB faithfulness: circuits of the top k % of edges over the grid, each run with out-of-circuit edges patched
/// from the counterfactual; f = (m(C) − m(∅)) / (m(N) − m(∅)); CPR over the signed ranking, CMD over |score|.
/// </summary>
[Activity("circuits.faithfulness", Version = 3, Category = "Faithfulness", Resources = ["gpu"], Summary = "Faithfulness curve, CPR and CMD (MIB) of circuits chosen from edge scores")]
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

        [Input("Positional scores (PEAP): circuit sizes, in abstract edges taken by the search")]
        public IReadOnlyList<int> TopK { get; init; } = [5, 10, 20, 50, 100, 200, 500];

        [Input("Positional scores: the span statistic to rank by (sum, avg, sum_abs_pos, sum_abs_exp, max_abs)")]
        public string Statistic { get; init; } = "sum";
    }

    /// <summary>Circuit sizes and the statistic are checked before anything runs.</summary>
    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Fractions).Must(f => f.Count > 0 && f.All(x => x > 0 && x <= 1))
                .WithMessage("expected a non-empty list of edge fractions, each in (0, 1]");
            RuleFor(i => i.TopK).Must(k => k.Count > 0 && k.All(x => x > 0))
                .WithMessage("expected a non-empty list of circuit sizes, each ≥ 1");
            RuleFor(i => i.Statistic).Must(s => PositionalScores.Statistics.Contains(s))
                .WithMessage(i => $"unknown statistic \"{Pipelines.Engine.Definitions.WorkflowParser.Short(i.Statistic)}\"; expected one of: {string.Join(", ", PositionalScores.Statistics)}");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
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
                ["selection"] = input.Selection == SelectionMethod.TopN ? "top-n" : "greedy",
                ["ablation"] = Circuits.Ablation.Name(input.Ablation),
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
            if (PositionalScoresFile.Exists(input.Scores.Path))
            {
                result["positional"] = PositionalCurve(input, context, model, graph, batch);
            }
            File.WriteAllText(context.OutputFile("metrics"), result.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            context.Log(undefined is null
                ? $"CPR {result["cpr"]}, CMD {result["cmd"]} (m(N) {mFull:F3}, m(∅) {mEmpty:F3}) on {batch.Count} pairs"
                : $"warning: faithfulness undefined: {undefined}");
        }
        return Task.CompletedTask;
    }

    /// <summary>
    /// PEAP's evaluation of positional circuits at each size: soft faithfulness M(C)/M(N), hard faithfulness (the
    /// fraction of examples whose top-1 token at the last position is the model's), the MIB-normalized
    /// (M(C) − M(∅))/(M(N) − M(∅)), and the size in full-graph edges averaged over examples. Out-of-circuit edges carry
    /// the counterfactual run's values (PEAP evaluates with mean ablation over an ablation split; see the README).
    /// </summary>
    private static JsonObject PositionalCurve(Input input, ActivityContext context, Pipelines.Models.Transformer.HookedTransformer model, ComputationGraph graph, CounterfactualBatch batch)
    {
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(input.Scores.Path, "index.json")))!;
        var positional = index["info"]!["positional"]!;
        var spans = positional["spans"]!.AsArray().Select(x => x!.GetValue<string>()).ToList();
        if (positional["mode"]!.GetValue<string>() == "positions")
        {
            batch.UsePositionsAsSpans(model.Config.DefaultPrependBos ? 1 : 0);
        }
        if (batch.Spans is null || !batch.SpanTitles.SequenceEqual(spans))
        {
            throw new ActivityException($"the scores are positional over spans {string.Join(", ", spans)}; the dataset's rows must carry the same schema's spans (got {(batch.Spans is null ? "none" : string.Join(", ", batch.SpanTitles))})");
        }
        var grid = PositionalScoresFile.Read(input.Scores.Path, spans, input.Statistic);
        var sizes = input.TopK.Where(k => k > 0).Distinct().Order().ToList();
        var circuits = sizes.Select(k => PositionalCircuit.Search(graph, grid, k, absolute: true)).ToList();
        var masks = circuits.Select(c => c.Masks()).ToList();
        var (emptyNc, emptyCr) = PositionalCircuit.Empty(graph, spans).Masks();
        var run = new PositionalCircuitRun(model, graph);
        var metric = new double[circuits.Count];
        var agree = new int[circuits.Count];
        var fullGraphEdges = new double[circuits.Count];
        double mFull = 0, mEmpty = 0;
        var spanLengths = batch.Spans.sum(-1).to(ScalarType.Int32).data<int>().ToArray(); // [N·S]
        for (var start = 0; start < batch.Count; start += input.BatchSize)
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var n = Math.Min(input.BatchSize, batch.Count - start);
            var (clean, corrupted, mask, perExample) = batch.Slice(start, n);
            var spanMask = batch.SpanSlice(start, n);
            using var noGrad = no_grad();
            using var ablated = run.Capture(corrupted, mask);
            var rows = arange(Pipelines.Models.Runtime.Scalars.Int(n));
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
            context.Report((double)(start + n) / batch.Count, $"positional circuits: {start + n} of {batch.Count} pairs");
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
        context.Log($"positional circuits: {string.Join(", ", curve.Select(c => $"top {c!["topK"]}: soft {c["soft"]}, hard {c["hard"]}"))}");
        return new JsonObject
        {
            ["spans"] = new JsonArray(spans.Select(x => (JsonNode)x).ToArray()),
            ["statistic"] = input.Statistic,
            ["search"] = "peap-greedy, |score|",
            ["ablation"] = "counterfactual",
            ["mFull"] = JsonNumbers.Round(mFull),
            ["mEmpty"] = JsonNumbers.Round(mEmpty),
            ["curve"] = curve,
        };
    }
}
