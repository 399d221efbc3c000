using System.Text.Json.Nodes;
using Pipelines.Activities.Circuits;
using Pipelines.Engine.Activities;
using static TorchSharp.torch;

namespace Pipelines.Tests.Circuits;

/// <summary>The Scores artifact's index is a typed record with one reader and writer; malformed files get one line.</summary>
public sealed class ScoresIndexTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "pipelines-scores-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void WrittenScoresReadBackTypedAndSayHowTheyWereMade()
    {
        var graph = new ComputationGraph(2, 4, false);
        using var scores = ones(graph.NForward, graph.NBackward);
        ScoresFile.Write(_dir, graph, scores, new JsonObject
        {
            ["method"] = "eap-ig-inputs", ["metric"] = "logit difference", ["loss"] = "−metric", ["ablation"] = "counterfactual",
            ["positional"] = new JsonObject { ["mode"] = "spans", ["spans"] = new JsonArray("A", "B") },
        }, 64);
        var (read, grid, index) = ScoresFile.Read(_dir);
        Assert.Equal(graph.EdgeCount, index.Edges);
        Assert.Equal(64, index.DModel);
        Assert.Equal(graph.NForward, index.Forward.Count);
        Assert.Equal("eap-ig-inputs", index.Info.Method);
        Assert.Equal(["A", "B"], index.Info.Positional!.Spans);
        Assert.Equal("logit difference", index.Info.Scoring()["metric"]!.GetValue<string>());
        Assert.Equal(1f, grid[0, 0]);
        Assert.Equal(read.EdgeCount, graph.EdgeCount);
    }

    [Theory]
    [InlineData("{", "not a Scores index")]
    [InlineData("""{"format": "other/9", "cfg": {}}""", "is not one this version reads")]
    [InlineData("""{"format": "pipelines-edge-scores/1"}""", "\"cfg\" is missing")]
    [InlineData("""{"format": "pipelines-edge-scores/1", "cfg": {"d_model": "x"}, "edges": 3}""", "\"cfg.d_model\" is missing or not a int32")]
    public void MalformedIndexesAreOneLine(string text, string message)
    {
        Directory.CreateDirectory(_dir);
        File.WriteAllText(Path.Combine(_dir, "index.json"), text);
        var e = Assert.Throws<ActivityException>(() => ScoresIndex.Read(Path.Combine(_dir, "index.json")));
        Assert.Contains(message, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
