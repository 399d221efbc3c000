using System.Text.Json.Nodes;
using Pipelines.Activities.Circuits;
using Pipelines.Activities.Circuits.Faithfulness;
using Pipelines.Models.Tokenizers;
using Pipelines.Tests.Models;

namespace Pipelines.Tests.Circuits;

/// <summary>MIB faithfulness runs as a library call, without the engine: its curve is anchored at both ends.</summary>
public sealed class FaithfulnessLibraryTests
{
    [Fact]
    public void TheCurveRunsWithoutTheEngineAndIsAnchoredAtBothEnds()
    {
        using var model = TinyModels.Create("gpt2");
        var graph = ComputationGraph.For(model.Config);
        var words = new WordLevelTokenizer(Enumerable.Range(0, model.Config.DVocab).ToDictionary(i => $"w{i}", i => i), "w0", 1, null, 0);
        var random = new Random(7);
        var rows = Enumerable.Range(0, 24).Select(_ =>
        {
            int a = random.Next(3, 40), b = random.Next(3, 40), c = random.Next(3, 40), d = random.Next(3, 40);
            return new JsonObject { ["clean"] = $"w{a} w{b} w{c}", ["corrupted"] = $"w{a} w{d} w{c}", ["correct"] = $"w{b}", ["incorrect"] = $"w{d}" };
        }).Where(r => r["clean"]!.GetValue<string>() != r["corrupted"]!.GetValue<string>()).ToList<JsonObject>();
        using var batch = CounterfactualBatch.FromRows(rows, words, model.Config);
        var scores = new float[graph.NForward, graph.NBackward];
        foreach (var (f, b) in graph.Edges())
        {
            scores[f, b] = (float)random.NextDouble();
        }
        var result = MibFaithfulness.Evaluate(model, graph, scores, batch, new FaithfulnessSettings { Fractions = [0.001, 0.5, 1.0], BatchSize = 8 });
        foreach (var ranking in new[] { "signed", "absolute" })
        {
            var curve = result[ranking]!.AsArray();
            Assert.Equal(0, curve[0]!["edges"]!.GetValue<long>());
            Assert.Equal(result["mEmpty"]!.GetValue<double>(), curve[0]!["metric"]!.GetValue<double>(), 4);
            Assert.Equal(graph.EdgeCount, curve[2]!["edges"]!.GetValue<long>());
            Assert.Equal(result["mFull"]!.GetValue<double>(), curve[2]!["metric"]!.GetValue<double>(), 4);
        }
        Assert.Equal(batch.Count, result["pairs"]!.GetValue<int>());
    }
}
