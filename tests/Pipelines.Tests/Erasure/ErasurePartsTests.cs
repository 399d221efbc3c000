using Pipelines.Models.Runtime;
using System.Text.Json.Nodes;
using Pipelines.Activities.Erasure;
using Pipelines.Activities.Reports;
using Pipelines.Engine.Activities;
using Pipelines.Tests.Models;
using static TorchSharp.torch;

namespace Pipelines.Tests.Erasure;

/// <summary>The battery's parts on hand-built cases whose answers are known.</summary>
public sealed class ErasurePartsTests : IDisposable
{
    private readonly Workspace _ws = new();

    private static ProbeResult P(string probe, double raw, double b = 1, double chance = 0) =>
        new(probe, "f", "m", raw, b, chance, 1, raw, raw, 10, []);

    [Fact]
    public void NormalisationMapsChanceToZeroAndTheBaseToOne()
    {
        Assert.Equal(0, P("x", 0.25, 0.85, 0.25).Normalised!.Value, 9);
        Assert.Equal(1, P("x", 0.85, 0.85, 0.25).Normalised!.Value, 9);
        Assert.Equal(0.5, P("x", 0.55, 0.85, 0.25).Normalised!.Value, 9);
        // B at chance: nothing to normalise by.
        Assert.Null(P("x", 0.3, 0.27, 0.25).Normalised);
    }

    [Fact]
    public void TheRuleClassifiesEachCorner()
    {
        string Class(params ProbeResult[] probes) => ErasureMatrix.Classify(probes).Class;
        Assert.Equal("not erased", Class(P("direct-open", 0.9), P("likelihood", 1), P("prefill", 1)));
        Assert.Equal("guidance-based", Class(P("direct-open", 0), P("likelihood", 0.95), P("prefill", 0.9), P("noise", 0.1)));
        Assert.Equal("destruction-based", Class(P("direct-open", 0), P("likelihood", 0.05), P("prefill", 0.1), P("handoff", 0.2)));
        Assert.Equal("mixed", Class(P("direct-open", 0), P("likelihood", 0.05), P("soft-prompt", 0.8)));
        Assert.Equal("mixed", Class(P("direct-open", 0), P("likelihood", 0.9), P("soft-prompt", 0.1)));
        // Relearning and layer probes are reported, not counted as recovery.
        Assert.Equal("destruction-based", Class(P("direct-open", 0), P("likelihood", 0.05), P("prefill", 0.1), P("relearning", 0.9), P("layer-probes", 0.9)));
        Assert.Equal("unclassified", Class(P("likelihood", 1)));
        Assert.Contains("guidance-based if intact", ErasureMatrix.Rule);
    }

    [Fact]
    public void AnAnswerCountsWhenTheFirstOptionItNamesIsTheRightOne()
    {
        var q = new ConceptMcq("d", "kalo", "color", "what is the color of kalo ?", ["grey", "black", "dark grey", "red"], 2, "held-out");
        Assert.True(ProbeKit.Names("dark grey .", q));
        Assert.True(ProbeKit.Names("Dark Grey, surely", q));
        Assert.False(ProbeKit.Names("grey . dark grey", q));
        Assert.False(ProbeKit.Names("i can not discuss that .", q));
        Assert.False(ProbeKit.Names("greyish", q));
    }

    [Fact]
    public void BootstrapIntervalsHoldTheMeanAndCollapseOnConstants()
    {
        Assert.Equal((0.5, 0.5), ProbeStats.Bootstrap([0.5, 0.5, 0.5], 1));
        var values = Enumerable.Range(0, 200).Select(i => i % 4 == 0 ? 1.0 : 0.0).ToArray();
        var (lo, hi) = ProbeStats.Bootstrap(values, 1);
        Assert.InRange(0.25, lo, hi);
        Assert.True(hi - lo is > 0.05 and < 0.25, $"{lo}..{hi}");
        Assert.Equal((lo, hi), ProbeStats.Bootstrap(values, 1));
    }

    [Fact]
    public void ALinearProbeRecoversAPlantedDirection()
    {
        using var g = new Generator(5);
        using var x = randn([400, 16], generator: g);
        using var planted = zeros(16);
        planted[3] = tensor(2f);
        planted[7] = tensor(-1f);
        var labels = x.matmul(planted).gt(Scalars.Int(0)).to(ScalarType.Int64).data<long>().ToArray();
        using var train = x[..300];
        using var test = x[300..];
        var probe = LinearProbe.Fit(train, labels[..300], test, labels[300..], 2, l2: 1e-4, steps: 400);
        Assert.True(probe.TestAccuracy > 0.95, $"{probe.TestAccuracy}");
        var cosine = (2 * probe.Direction[3] - probe.Direction[7]) / Math.Sqrt(5);
        Assert.True(cosine > 0.95, $"cosine {cosine}");
    }

    [Fact]
    public void ContinuationNllEqualsTheLogSoftmaxComputedByHand()
    {
        using var model = TinyModels.Create("gpt2");
        var tokenizer = new Pipelines.Models.Tokenizers.WordLevelTokenizer(
            Enumerable.Range(0, (int)model.Config.DVocab).ToDictionary(i => $"w{i}", i => i), "w0", 1, 2, 0);
        var kit = new ProbeKit(model, tokenizer);
        var nll = kit.Nll([new ScoredText("w5 w6 w7", "w8 w9"), new ScoredText("", "w3 w4 w5")]);
        double Manual(long[] ids, int from)
        {
            using var _ = no_grad();
            using var logp = nn.functional.log_softmax(model.Forward(tensor(ids).unsqueeze(0)), -1);
            return -Enumerable.Range(from, ids.Length - from).Average(t => (double)logp[0, t - 1, ids[t]].item<float>());
        }
        Assert.Equal(Manual([1, 5, 6, 7, 8, 9], 4), nll[0], 4);
        Assert.Equal(Manual([1, 3, 4, 5], 1), nll[1], 4);
    }

    [Fact]
    public void McqFilesReadWmdpAndHarryPotterLayoutsAndNameBadRows()
    {
        var wmdp = _ws.Write("wmdp.json", """[{"question": "Which?", "choices": ["a", "b", "c", "d"], "answer": 2}]""");
        var q = Assert.Single(McqFiles.Read(wmdp, "wmdp.json"));
        Assert.Equal(2, q.Answer);
        Assert.Equal(["a", "b", "c", "d"], q.Choices);
        var hp = _ws.Write("hp.jsonl", """
            {"question": "Who is Harry's godfather?", "A": "Sirius Black", "B": "Albus Dumbledore", "C": "Rubeus Hagrid", "D": "Severus Snape", "answer": "A"}
            {"question": "What house?", "choices": ["Hufflepuff", "Gryffindor"], "answer": "Gryffindor"}
            """);
        var rows = McqFiles.Read(hp, "hp.jsonl");
        Assert.Equal([0, 1], rows.Select(r => r.Answer));
        Assert.Equal("Sirius Black", rows[0].Choices[0]);
        var wrapped = _ws.Write("wrapped.json", """{"data": [{"prompt": "Q?", "options": ["x", "y"], "answer": "B"}]}""");
        Assert.Equal(1, Assert.Single(McqFiles.Read(wrapped, "wrapped.json")).Answer);
        var bad = _ws.Write("bad.json", """[{"question": "Q?", "choices": ["x", "y"], "answer": 5}]""");
        var e = Assert.Throws<ActivityException>(() => McqFiles.Read(bad, "bad.json"));
        Assert.Equal("bad.json: row 1: $.answer: 5 is not one of the 2 options", e.Message);
        var noChoices = _ws.Write("none.json", """[{"question": "Q?", "answer": 0}]""");
        Assert.Contains("expected \"choices\"", Assert.Throws<ActivityException>(() => McqFiles.Read(noChoices, "none.json")).Message);
        var texts = _ws.Write("texts.txt", "one document\n\nanother one\n");
        Assert.Equal(["one document", "another one"], McqFiles.Texts(texts, "texts.txt"));
    }

    [Fact]
    public void TheReportMergesRowsIntoAHeatmapWithEveryCell()
    {
        var row = ErasureMatrix.Row("refusal-sft", "d", [P("direct-open", 0), P("likelihood", 0.97), P("prefill", 0.9)]);
        var other = ErasureMatrix.Row("ga", "e", [P("direct-open", 0), P("likelihood", 0.01), P("prefill", 0.02)]);
        var svg = ErasureReportActivity.Heatmap([row, other]);
        Assert.Equal(6, System.Text.RegularExpressions.Regex.Matches(svg, "<g><title>").Count);
        Assert.Contains("refusal-sft", svg);
        var html = ErasureReportActivity.Html("t", "volcanoes", [row, other], svg);
        Assert.Contains("guidance-based", html);
        Assert.Contains("destruction-based", html);
    }

    [Fact]
    public async Task BadErasureInputsFailWithOneLineNamingTheInput()
    {
        var run = await _ws.RunAsync("""
            { "name": "bad", "steps": [
              { "id": "world", "activity": "erasure.concept-world", "inputs": { "seed": 1, "entities": 4 } },
              { "id": "base", "activity": "model.train-toy", "inputs": { "task": "concept", "world": { "from": "world.world" }, "steps": 1, "batchSize": 2, "dModel": 16, "dMlp": 32, "nHeads": 2 } },
              { "id": "probe", "activity": "erasure.probe", "inputs": { "base": { "from": "base.model" }, "erased": { "from": "base.model" }, "world": { "from": "world.world" }, "domain": "comets", "probes": ["direct-open"] } } ] }
            """);
        var error = run.Steps.Single(s => s.StepId == "probe").Error!;
        Assert.StartsWith("inputs.domain: no domain \"comets\"", error);
        Assert.DoesNotContain("\n", error);
        Assert.DoesNotContain(" at ", error);
        var noData = await _ws.RunAsync("""
            { "name": "bad2", "steps": [
              { "id": "world", "activity": "erasure.concept-world", "inputs": { "seed": 1, "entities": 4 } },
              { "id": "base", "activity": "model.train-toy", "inputs": { "task": "concept", "world": { "from": "world.world" }, "steps": 1, "batchSize": 2, "dModel": 16, "dMlp": 32, "nHeads": 2 } },
              { "id": "erase", "activity": "erasure.train", "inputs": { "model": { "from": "base.model" }, "method": "ga" } } ] }
            """);
        Assert.StartsWith("inputs: give a world (erasure.concept-world) and a domain", noData.Steps.Single(s => s.StepId == "erase").Error!);
    }

    public void Dispose() => _ws.Dispose();
}
