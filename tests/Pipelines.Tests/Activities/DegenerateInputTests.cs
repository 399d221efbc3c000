using System.Text.Json.Nodes;
using Pipelines.Activities.Circuits;
using Pipelines.Activities.Circuits.Faithfulness;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Running;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Training;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Tests.Activities;

/// <summary>
/// Degenerate science is reported, never plotted as if it meant something: pairs that read the same, prompts the model
/// cannot read, a model whose metric does not move, numbers that are not finite, a checkpoint without its tokenizer.
/// </summary>
public sealed class DegenerateInputTests : IDisposable
{
    private readonly Workspace _ws = new();

    public void Dispose() => _ws.Dispose();

    private static JsonObject Row(string clean, string corrupted, string correct = "Mary", string incorrect = "John") =>
        new() { ["clean"] = clean, ["corrupted"] = corrupted, ["correct"] = correct, ["incorrect"] = incorrect };

    private static TransformerConfig ToyConfig => ToyTrainer.ModelConfig(new ToyTrainingOptions());

    [Fact]
    public void PairsThatTokenizeIdenticallyAreDroppedAndCounted()
    {
        var rows = ToyTasks.Generate("ioi", 40, 3).Select(e => e.ToJson()).ToList();
        // "Zed" and "Quill" are both unknown to the toy vocabulary: clean and corrupted read the same ([UNK]).
        rows.Add(Row("When Mary and John went to the store , Zed gave a drink to", "When Mary and John went to the store , Quill gave a drink to"));
        rows.Add(Row("When Mary and John went to the store , John gave a drink to", "When Mary and John went to the store , John gave a drink to"));
        using var batch = CounterfactualBatch.FromRows(rows, ToyTrainer.Tokenizer(), ToyConfig);
        Assert.Equal(40, batch.Count);
        Assert.Equal(2, batch.DroppedIdentical);
    }

    [Fact]
    public void PromptsMostlyOutsideTheVocabularyFailWithTheShareAndExamples()
    {
        // EAP-IG's greater-than rows (four-digit years, other nouns) given to the word-level toy model.
        var rows = Enumerable.Range(0, 20).Select(i => Row($"The expedition lasted from the year 17{10 + i} to the year 17", $"The expedition lasted from the year 1701 to the year 17", "The", "year")).ToList();
        var e = Assert.Throws<ActivityException>(() => CounterfactualBatch.FromRows(rows, ToyTrainer.Tokenizer(), ToyConfig));
        Assert.Contains("unknown to this model's tokenizer", e.Message);
        Assert.Contains("%", e.Message);
        Assert.Contains("\"expedition\"", e.Message);
        Assert.Contains("\"1701\"", e.Message);
    }

    [Fact]
    public void AnAnswerOutsideTheVocabularyIsNamed()
    {
        var rows = new List<JsonObject> { Row("When Mary and John went to the store , John gave a drink to", "When Mary and John went to the store , Tom gave a drink to", "Zed") };
        Assert.Contains("\"Zed\" is not in this model's vocabulary", Assert.Throws<ActivityException>(() => CounterfactualBatch.FromRows(rows, ToyTrainer.Tokenizer(), ToyConfig)).Message);
    }

    [Fact]
    public void FaithfulnessIsUndefinedWhenTheFullAndEmptyCircuitsAgree()
    {
        // Independent facts: identical per-example metrics, and metrics whose mean difference is noise.
        Assert.NotNull(FaithfulnessCurve.UndefinedReason([1.26f, 1.30f, 1.22f], [1.26f, 1.30f, 1.22f]));
        var noise = new Random(1);
        var full = Enumerable.Range(0, 256).Select(_ => (float)(1.26 + noise.NextDouble() - 0.5)).ToList();
        var empty = Enumerable.Range(0, 256).Select(_ => (float)(1.263 + noise.NextDouble() - 0.5)).ToList();
        Assert.Contains("undefined", FaithfulnessCurve.UndefinedReason(full, empty));
        Assert.Contains("not finite", FaithfulnessCurve.UndefinedReason([float.NaN], [0f]));
        // A clear separation is defined: m(N) ≈ 4, m(∅) ≈ 1 with the same spread.
        Assert.Null(FaithfulnessCurve.UndefinedReason(full.Select(x => x + 3).ToList(), empty));
        Assert.Null(Pipelines.Activities.JsonNumbers.Round(double.NaN));
        Assert.Null(Pipelines.Activities.JsonNumbers.Round(double.PositiveInfinity));
    }

    [Fact]
    public async Task AModelWhoseMetricNeverMovesGetsUndefinedFaithfulnessAndAReportThatSaysWhy()
    {
        // A toy checkpoint whose unembedding is zero: every logit is 0, so m(N) = m(∅) = 0 exactly.
        var dir = Path.Combine(_ws.Root, "flat");
        using (var model = new HookedTransformer(ToyConfig).InitWeights(1))
        {
            using (no_grad())
            {
                model.W_U.zero_();
            }
            Checkpoint.Save(model, dir);
        }
        ToyTrainer.Tokenizer().Save(Path.Combine(dir, "tokenizer.json"), [ToyTasks.Pad, ToyTasks.Bos, ToyTasks.Unknown]);
        var run = await _ws.RunAsync("""
            { "name": "flat", "steps": [
              { "id": "load", "activity": "model.load", "inputs": { "path": "flat" } },
              { "id": "pairs", "activity": "data.toy-task", "inputs": { "count": 16 } },
              { "id": "attribute", "activity": "circuits.attribute", "inputs": { "model": { "from": "load.model" }, "dataset": { "from": "pairs.dataset" }, "method": "eap" } },
              { "id": "circuit", "activity": "circuits.prune", "inputs": { "scores": { "from": "attribute.scores" }, "fraction": 0.2 } },
              { "id": "faithfulness", "activity": "circuits.faithfulness", "inputs": { "model": { "from": "load.model" }, "dataset": { "from": "pairs.dataset" }, "scores": { "from": "attribute.scores" } } },
              { "id": "report", "activity": "report.circuit", "inputs": { "circuit": { "from": "circuit.circuit" }, "faithfulness": { "from": "faithfulness.metrics" } } } ] }
            """);
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => $"{s.StepId}: {s.Error}")));
        var steps = run.Steps.ToDictionary(s => s.StepId);
        var metrics = JsonNode.Parse(File.ReadAllText(_ws.Store.ObjectPath(steps["faithfulness"].Outputs["metrics"].Digest)))!;
        Assert.False(metrics["defined"]!.GetValue<bool>());
        Assert.Contains("undefined", metrics["undefinedReason"]!.GetValue<string>());
        Assert.Null(metrics["cpr"]);
        Assert.Null(metrics["cmd"]);
        Assert.All(metrics["signed"]!.AsArray(), p => Assert.Null(p!["faithfulness"]));
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(_ws.Store.ObjectPath(steps["attribute"].Outputs["scores"].Digest), "index.json")))!;
        Assert.Contains("exactly 0", index["info"]!["warning"]!.GetValue<string>());
        var html = File.ReadAllText(_ws.Store.ObjectPath(steps["report"].Outputs["report"].Digest));
        Assert.Contains("Faithfulness is undefined", html);
    }

    [Fact]
    public void AGpt2CheckpointWithAnotherVocabularyNeverFallsBackToGpt2sTokenizer()
    {
        var dir = Path.Combine(_ws.Root, "no-tokenizer");
        using (var model = new HookedTransformer(ToyConfig).InitWeights(1))
        {
            Checkpoint.Save(model, dir);
        }
        var e = Assert.Throws<ActivityException>(() => ModelArtifacts.Open(new Artifact("", ArtifactKinds.Model, "inode/directory", dir, 0, true, "model")));
        Assert.Contains("is not GPT-2's", e.Message);
    }
}
