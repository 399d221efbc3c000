using Pipelines.Models.Runtime;
using System.Text.Json.Nodes;
using Pipelines.Engine.Ledger;
using Pipelines.Models.Checkpoints;

namespace Pipelines.Tests.Activities;

public sealed class ModelActivityTests : IDisposable
{
    private readonly Workspace _ws = new();

    private const string Workflow = """
        {
          "name": "toy",
          "parameters": { "steps": { "type": "integer", "default": 120 } },
          "steps": [
            { "id": "train", "activity": "model.train-toy", "inputs": { "task": "greater-than", "steps": { "param": "steps" }, "checkpointEvery": 60, "dModel": 32, "dMlp": 64 } },
            { "id": "pairs", "activity": "data.toy-task", "inputs": { "task": "greater-than", "count": 64 } },
            { "id": "evaluate", "activity": "model.evaluate", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "pairs.dataset" } } },
            { "id": "reload", "activity": "model.load", "inputs": { "path": "external-model" } },
            { "id": "evaluateReloaded", "activity": "model.evaluate", "inputs": { "model": { "from": "reload.model" }, "dataset": { "from": "pairs.dataset" } } }
          ]
        }
        """;

    [Fact]
    public async Task TrainEvaluateAndLoadThroughTheEngineAreCachedAndConsistent()
    {
        // A checkpoint "on disk", as a user would bring: the same toy model trained outside the workflow.
        Pipelines.Models.Training.ToyTrainer.Train(new() { Task = "greater-than", Steps = 120, DModel = 32, DMlp = 64, EvalExamples = 16 }, Path.Combine(_ws.Root, "external-model"));
        File.WriteAllText(Path.Combine(_ws.Root, "external-model", "notes.txt"), "not part of the checkpoint");

        var run = await _ws.RunAsync(Workflow);
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var steps = run.Steps.ToDictionary(s => s.StepId);

        // model.load's digest is the content of the checkpoint files, so the same weights give the same artifact.
        Assert.Equal(steps["train"].Outputs["model"].Digest, steps["reload"].Outputs["model"].Digest);
        Assert.False(File.Exists(Path.Combine(_ws.Store.ObjectPath(steps["reload"].Outputs["model"].Digest), "notes.txt")));
        Assert.Equal(steps["evaluate"].Outputs["metrics"].Digest, steps["evaluateReloaded"].Outputs["metrics"].Digest);

        var metrics = JsonNode.Parse(File.ReadAllText(_ws.Store.ObjectPath(steps["evaluate"].Outputs["metrics"].Digest)))!;
        Assert.Equal(64, metrics["examples"]!.GetValue<int>());
        Assert.Equal("probability difference", metrics["metric"]!.GetValue<string>());
        var checkpoints = _ws.Store.ObjectPath(steps["train"].Outputs["checkpoints"].Digest);
        Assert.Equal(["step-000060", "step-000120"], Directory.GetDirectories(checkpoints).Select(Path.GetFileName).Order());
        using (var model = Checkpoint.Load(Path.Combine(checkpoints, "step-000060")))
        {
            Assert.Equal(32, model.Config.DModel);
        }

        var again = await _ws.RunAsync(Workflow);
        Assert.Equal(0, again.Computed);
        var longer = await _ws.RunAsync(Workflow, new Dictionary<string, string> { ["steps"] = "130" });
        var status = longer.Steps.ToDictionary(s => s.StepId, s => s.Status);
        Assert.True(longer.Status == RunStatus.Succeeded, string.Join("; ", longer.Steps.Select(s => $"{s.StepId} {s.Status} {s.Error}")));
        Assert.Equal(StepStatus.Computed, status["train"]);
        Assert.Equal(StepStatus.Computed, status["evaluate"]);
        Assert.Equal(StepStatus.Cached, status["pairs"]);
        Assert.Equal(StepStatus.Cached, status["evaluateReloaded"]);
    }

    [Fact]
    public async Task ModelLoadMergesAPeftAdapterAndRefusesOneForAnotherModel()
    {
        var basePath = Path.Combine(_ws.Root, "base");
        Pipelines.Models.Training.ToyTrainer.Train(new() { Task = "greater-than", Steps = 10, DModel = 32, DMlp = 64, EvalExamples = 4 }, basePath);
        long[] tokens = [1, 4, 7, 2, 9];
        TorchSharp.torch.Tensor expected;
        using (var model = Checkpoint.Load(basePath))
        using (var adapter = Pipelines.Models.Adapters.LoraAdapter.Create(model.Config, ["c_attn", "c_fc"], rank: 2, alpha: 4, seed: 3))
        {
            using (TorchSharp.torch.no_grad())
            {
                foreach (var (name, p) in adapter.named_parameters().Where(p => p.name.EndsWith("_B", StringComparison.Ordinal)))
                {
                    p.copy_(TorchSharp.torch.randn(p.shape).mul(Scalars.Of(0.1)));
                }
            }
            adapter.Save(Path.Combine(_ws.Root, "adapter"));
            adapter.Attach(model);
            using var _ = TorchSharp.torch.no_grad();
            expected = model.Forward(TorchSharp.torch.tensor(tokens).unsqueeze(0)).detach().clone();
        }
        var run = await _ws.RunAsync("""{ "name": "a", "steps": [ { "id": "load", "activity": "model.load", "inputs": { "path": "base", "adapter": "adapter" } } ] }""");
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var merged = _ws.Store.ObjectPath(run.Steps[0].Outputs["model"].Digest);
        Assert.Equal("peft-lora", JsonNode.Parse(File.ReadAllText(Path.Combine(merged, "config.json")))!["pipelines_adapter"]!["format"]!.GetValue<string>());
        using (var model = Checkpoint.Load(merged))
        using (TorchSharp.torch.no_grad())
        {
            using var got = model.Forward(TorchSharp.torch.tensor(tokens).unsqueeze(0));
            Assert.True(got.allclose(expected, rtol: 0, atol: 1e-4), $"merged artifact vs attached adapter: {got.sub(expected).abs().max().item<float>()}");
        }
        expected.Dispose();

        // An adapter written for a wider model fails the step with one line naming the file and the shapes.
        Pipelines.Models.Transformer.TransformerConfig config;
        using (var m = Checkpoint.Load(basePath))
        {
            config = m.Config;
        }
        using (var adapter = Pipelines.Models.Adapters.LoraAdapter.Create(config with { DMlp = 128 }, ["c_fc"], rank: 2, alpha: 4))
        {
            adapter.Save(Path.Combine(_ws.Root, "wrong-adapter"));
        }
        var bad = await _ws.RunAsync("""{ "name": "b", "steps": [ { "id": "load", "activity": "model.load", "inputs": { "path": "base", "adapter": "wrong-adapter" } } ] }""");
        Assert.Equal(RunStatus.Failed, bad.Status);
        Assert.Contains("adapter_model.safetensors", bad.Steps[0].Error);
        Assert.Contains("needs", bad.Steps[0].Error);
        Assert.DoesNotContain("\n   at ", bad.Steps[0].Error);
    }

    [Fact]
    public async Task LoadingABrokenCheckpointFailsTheStepWithTheFileName()
    {
        Directory.CreateDirectory(Path.Combine(_ws.Root, "broken"));
        File.WriteAllText(Path.Combine(_ws.Root, "broken", "config.json"), "{\"model_type\": \"gpt2\", \"n_embd\": 8, \"n_layer\": 1, \"n_head\": 2, \"vocab_size\": 10}");
        var run = await _ws.RunAsync("""{ "name": "b", "steps": [ { "id": "load", "activity": "model.load", "inputs": { "path": "broken" } } ] }""");
        Assert.Equal(RunStatus.Failed, run.Status);
        Assert.Contains("no model.safetensors", run.Steps[0].Error);
    }

    public void Dispose() => _ws.Dispose();
}
