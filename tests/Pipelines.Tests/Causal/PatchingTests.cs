using System.Text.Json.Nodes;
using Pipelines.Activities.Causal;
using Pipelines.Activities.Circuits;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using Pipelines.Tests.Models;
using Xunit;

namespace Pipelines.Tests.Causal;

/// <summary>Exact invariants of activation patching on a random tiny GPT-2: whole-layer patches and the last residual.</summary>
public sealed class PatchingTests
{
    internal static readonly WordLevelTokenizer Words = WordLevelTokenizer.WithSpecials(Enumerable.Range(0, 46).Select(i => $"w{i}"), "[PAD]", "[BOS]", "[EOS]", "[UNK]");

    /// <summary>Pairs of one length that differ in one or two words, with a span covering the whole prompt when asked.</summary>
    internal static List<JsonObject> Pairs(bool wholeSpan = false, int count = 6)
    {
        var rng = new Random(5);
        var rows = new List<JsonObject>();
        for (var i = 0; i < count; i++)
        {
            var words = Enumerable.Range(0, 5).Select(_ => rng.Next(4, 46)).ToArray();
            var corrupt = words.ToArray();
            corrupt[1] = (corrupt[1] + 7) % 46;
            if (i % 2 == 0)
            {
                corrupt[3] = (corrupt[3] + 3) % 46;
            }
            var row = new JsonObject
            {
                ["clean"] = string.Join(' ', words.Select(w => $"w{w}")),
                ["corrupted"] = string.Join(' ', corrupt.Select(w => $"w{w}")),
                ["correct"] = $"w{rng.Next(0, 46)}",
                ["incorrect"] = $"w{rng.Next(0, 46)}",
            };
            if (wholeSpan)
            {
                row["spans"] = new JsonObject { ["prompt"] = 0 };
                row["length"] = 6; // BOS + 5 words
            }
            rows.Add(row);
        }
        return rows;
    }

    private static readonly HookedTransformer Model = TinyModels.Create("gpt2", seed: 3);

    [Theory]
    [InlineData(PatchHook.ResidPre)]
    [InlineData(PatchHook.ResidPost)]
    public void PatchingAWholeLayerReproducesTheSourceRunExactly(PatchHook hook)
    {
        using var batch = CounterfactualBatch.FromRows(Pairs(wholeSpan: true), Words, Model.Config);
        var sweep = new PatchingSweep(Model);
        var denoise = sweep.Run(batch, Words, hook, PatchDirection.Denoise, PatchPositions.Spans, [0, 1], batchSize: 4);
        Assert.True(Math.Abs(denoise.Clean - denoise.Corrupted) > 1e-3, "the pairs must change the metric for the test to mean anything");
        foreach (var layer in denoise.Raw)
        {
            Assert.Equal(denoise.Clean, layer[0], 4); // the corrupted run with every clean activation of the layer is the clean run
        }
        Assert.All(denoise.Values, v => Assert.Equal(1.0, v[0]!.Value, 4));
        var noise = sweep.Run(batch, Words, hook, PatchDirection.Noise, PatchPositions.Spans, [0, 1], batchSize: 4);
        Assert.All(noise.Values, v => Assert.Equal(0.0, v[0]!.Value, 4)); // same formula: 0 = the corrupted metric
    }

    [Fact]
    public void TheLastResidualMattersOnlyAtTheFinalPositionAndUnchangedTokensDoNothingAtLayerZero()
    {
        using var batch = CounterfactualBatch.FromRows(Pairs(), Words, Model.Config);
        var sweep = new PatchingSweep(Model);
        var post = sweep.Run(batch, Words, PatchHook.ResidPost, PatchDirection.Denoise, PatchPositions.All, [1], batchSize: 4);
        Assert.Equal(6, post.Positions.Count);
        Assert.StartsWith("[BOS]_0", post.Positions[0]);
        Assert.Equal(1.0, post.Values[0][5]!.Value, 4);
        for (var p = 0; p < 5; p++)
        {
            Assert.Equal(0.0, post.Values[0][p]!.Value, 4); // a causal model's final logits read only the last position of the last block's output
        }
        var pre = sweep.Run(batch, Words, PatchHook.ResidPre, PatchDirection.Denoise, PatchPositions.All, [0], batchSize: 4);
        foreach (var p in new[] { 0, 1, 3, 5 })
        {
            Assert.Equal(0.0, pre.Values[0][p]!.Value, 4); // BOS and words 1, 3 and 5 are the same in every pair: nothing to patch
        }
        Assert.NotEqual(0.0, pre.Values[0][2]!.Value, 3);
    }

    [Fact]
    public void HeadColumnsPatchOneHeadAndAllHeadsTogetherEqualTheAttentionOutput()
    {
        using var batch = CounterfactualBatch.FromRows(Pairs(wholeSpan: true), Words, Model.Config);
        var sweep = new PatchingSweep(Model);
        var z = sweep.Run(batch, Words, PatchHook.Z, PatchDirection.Denoise, PatchPositions.All, [0, 1], batchSize: 6);
        Assert.Equal(["h0", "h1", "h2", "h3"], z.Positions);
        var attn = sweep.Run(batch, Words, PatchHook.AttnOut, PatchDirection.Denoise, PatchPositions.Spans, [0, 1], batchSize: 6);
        // An independent computation: patch every head's z at once through the plan; it must equal patching attn_out.
        using var scope = TorchSharp.torch.NewDisposeScope();
        using var noGrad = TorchSharp.torch.no_grad();
        var (clean, corrupted, mask, perExample) = batch.Slice(0, batch.Count);
        for (var l = 0; l < 2; l++)
        {
            var (_, cache) = Model.RunWithCache(clean, n => n == HookNames.Z(l), mask);
            using (cache)
            {
                var all = perExample(Interventions.Run(Model, corrupted, [new Interchange(HookNames.Z(l), cache[HookNames.Z(l)])], mask)).mean().item<float>();
                Assert.Equal(attn.Raw[l][0], all, 4);
            }
            Assert.Contains(z.Values[l], v => Math.Abs(v!.Value) > 1e-4);
        }
    }

    [Fact]
    public void TheGridFileRoundTripsAndTheHeatmapIsAPng()
    {
        using var batch = CounterfactualBatch.FromRows(Pairs(), Words, Model.Config);
        var grid = new PatchingSweep(Model).Run(batch, Words, PatchHook.MlpOut, PatchDirection.Noise, PatchPositions.All, [0, 1], batchSize: 4);
        var dir = Directory.CreateTempSubdirectory("grid").FullName;
        try
        {
            grid.Write(Path.Combine(dir, "grid.json"));
            var back = PatchingGrid.Read(Path.Combine(dir, "grid.json"));
            Assert.Equal("noise", back.Direction);
            Assert.Equal("mlp_out", back.Hook);
            Assert.Equal(grid.Raw[1][3], back.Raw[1][3], 12);
            var node = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "grid.json")))!;
            foreach (var key in new[] { "metric", "direction", "hook", "layers", "positions", "values", "raw" })
            {
                Assert.NotNull(node[key]);
            }
            GridPlot.Heatmap(Path.Combine(dir, "h.png"), grid.Values, ["L0", "L1"], grid.Positions, "t", "position", "layer", diverging: true);
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, File.ReadAllBytes(Path.Combine(dir, "h.png"))[..4]);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
