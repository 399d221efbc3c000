using System.Text.Json.Nodes;
using Pipelines.Activities.Circuits;
using Pipelines.Engine.Ledger;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Training;
using Pipelines.Models.Transformer;
using Xunit;
using static TorchSharp.torch;

namespace Pipelines.Tests.Activities;

/// <summary>
/// dtype: bf16 through the engine on every activity that takes it (the fused and the split attribution paths,
/// faithfulness, patching), scores in float32 and ranked like float32's; maxMemory picks the batch size or says
/// what it expects.
/// </summary>
public sealed class Bf16ActivityTests : IDisposable
{
    private readonly Workspace _ws = new();

    public void Dispose() => _ws.Dispose();

    private void SaveModel()
    {
        var dir = Path.Combine(_ws.Root, "toy");
        using (var model = new HookedTransformer(ToyTrainer.ModelConfig(new ToyTrainingOptions())).InitWeights(3, std: 0.2))
        {
            Checkpoint.Save(model, dir);
        }
        ToyTrainer.Tokenizer().Save(Path.Combine(dir, "tokenizer.json"), [ToyTasks.Pad, ToyTasks.Bos, ToyTasks.Unknown]);
    }

    [Fact]
    public async Task EveryActivityWithADtypeRunsInBf16AndRanksEdgesLikeFloat32()
    {
        SaveModel();
        var run = await _ws.RunAsync("""
            { "name": "bf16", "steps": [
              { "id": "load", "activity": "model.load", "inputs": { "path": "toy" } },
              { "id": "pairs", "activity": "data.toy-task", "inputs": { "count": 16 } },
              { "id": "f32", "activity": "circuits.attribute", "inputs": { "model": { "from": "load.model" }, "dataset": { "from": "pairs.dataset" }, "method": "eap" } },
              { "id": "bf16", "activity": "circuits.attribute", "inputs": { "model": { "from": "load.model" }, "dataset": { "from": "pairs.dataset" }, "method": "eap", "dtype": "bf16", "maxMemory": "64KiB" } },
              { "id": "split", "activity": "circuits.attribute", "inputs": { "model": { "from": "load.model" }, "dataset": { "from": "pairs.dataset" }, "method": "eap", "ablation": "mean", "dtype": "bf16" } },
              { "id": "igActivations", "activity": "circuits.attribute", "inputs": { "model": { "from": "load.model" }, "dataset": { "from": "pairs.dataset" }, "method": "eap-ig-activations", "dtype": "bf16" } },
              { "id": "faithfulness", "activity": "circuits.faithfulness", "inputs": { "model": { "from": "load.model" }, "dataset": { "from": "pairs.dataset" }, "scores": { "from": "bf16.scores" }, "dtype": "bf16" } },
              { "id": "years", "activity": "data.toy-task", "inputs": { "task": "greater-than", "count": 8 } },
              { "id": "patching", "activity": "patching.sweep", "inputs": { "model": { "from": "load.model" }, "dataset": { "from": "years.dataset" }, "dtype": "bf16" } } ] }
            """);
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => $"{s.StepId}: {s.Error}")));
        var steps = run.Steps.ToDictionary(s => s.StepId);
        Tensor Scores(string step) => tensor(ScoresFile.Read(_ws.Store.ObjectPath(steps[step].Outputs["scores"].Digest)).Scores);
        using var scope = NewDisposeScope();
        var f32 = Scores("f32");
        foreach (var step in new[] { "bf16", "split", "igActivations" })
        {
            var scores = Scores(step);
            Assert.True(scores.isfinite().all().item<bool>(), step);
            Assert.True(scores.abs().max().item<float>() > 0, step);
        }
        var (rho, _) = ScoreAgreement.Compare(f32, Scores("bf16"), 10);
        Assert.True(rho > 0.95, $"bf16 EAP against float32: Spearman {rho:F3}");
        var metrics = JsonNode.Parse(File.ReadAllText(_ws.Store.ObjectPath(steps["faithfulness"].Outputs["metrics"].Digest)))!;
        Assert.NotNull(metrics["signed"]);
    }

    [Fact]
    public async Task AMemoryBudgetThatIsNotASizeIsOneLine()
    {
        SaveModel();
        var run = await _ws.RunAsync("""
            { "name": "budget", "steps": [
              { "id": "load", "activity": "model.load", "inputs": { "path": "toy" } },
              { "id": "pairs", "activity": "data.toy-task", "inputs": { "count": 4 } },
              { "id": "attribute", "activity": "circuits.attribute", "inputs": { "model": { "from": "load.model" }, "dataset": { "from": "pairs.dataset" }, "method": "eap", "maxMemory": "lots" } } ] }
            """);
        Assert.Equal(RunStatus.Failed, run.Status);
        var error = run.Steps.Single(s => s.StepId == "attribute").Error!;
        Assert.Contains("inputs.maxMemory", error);
        Assert.Contains("such as 512MiB", error);
        Assert.DoesNotContain("\n", error.Trim());
    }

    [Theory]
    [InlineData("4GiB", 4L * 1024 * 1024 * 1024)]
    [InlineData("512MiB", 512L * 1024 * 1024)]
    [InlineData("2GB", 2_000_000_000L)]
    [InlineData("1.5G", 1_500_000_000L)]
    [InlineData("1024", 1024L)]
    public void MemorySizesParse(string text, long bytes) => Assert.Equal(bytes, AttributionMemory.Parse(text));

    [Fact]
    public void TheBudgetPicksTheLargestBatchThatFits()
    {
        Assert.Equal(4, AttributionMemory.BatchSize(4 * 100 + 99, 100, 32));
        Assert.Equal(32, AttributionMemory.BatchSize(long.MaxValue, 100, 32));
        Assert.Equal(1, AttributionMemory.BatchSize(10, 100, 32)); // never below one pair
    }
}
