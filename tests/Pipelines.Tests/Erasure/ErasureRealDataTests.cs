using System.Text.Json.Nodes;
using Pipelines.Activities.Erasure;
using Pipelines.Engine.Ledger;

namespace Pipelines.Tests.Erasure;

/// <summary>
/// workflows/erasure-probe-real.json as a user runs it: a base checkpoint and a PEFT adapter on disk (here B and a
/// refusal-sft adapter written by erasure.train, the same step as the battery's refusal test, so one of them reuses the
/// other's), the concept's MCQs in WMDP's JSON layout and corpora as JSONL and
/// plain text. The shipped workflow file runs unchanged; only its parameters are set.
/// </summary>
[Collection("erasure")]
public sealed class ErasureRealDataTests(ErasureBatteryFixture fixture)
{
    [Fact]
    [Trait("Tier", "Slow")]
    public async Task TheRealWorkflowProbesAnAdapterOnDiskFromFiles()
    {
        await fixture.SetupAsync();
        var ws = fixture.Ws;
        var erase = await ws.RunAsync(ErasureBatteryFixture.Setup.TrimEnd().TrimEnd('}').TrimEnd().TrimEnd(']') + """
            , { "id": "refusal", "activity": "erasure.train", "inputs": { "model": { "from": "base.model" }, "method": "refusal-sft", "world": { "from": "world.world" },
                "domain": "volcanoes", "steps": 120, "checkpointEvery": 40, "seed": 1 } } ] }
            """);
        Assert.True(erase.Status == RunStatus.Succeeded, string.Join("; ", erase.Steps.Select(s => s.Error)));
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(to);
            foreach (var f in Directory.GetFiles(from))
            {
                File.Copy(f, Path.Combine(to, Path.GetFileName(f)), true);
            }
        }
        Copy(fixture.ModelPath, Path.Combine(ws.Root, "real", "base"));
        Copy(ws.Store.ObjectPath(erase.Steps.Single(s => s.StepId == "refusal").Outputs["adapter"].Digest), Path.Combine(ws.Root, "real", "adapter"));
        Assert.True(File.Exists(Path.Combine(ws.Root, "real", "adapter", "adapter_config.json")));
        // The adapter on disk, merged into B, is the erased model erasure.train wrote (PEFT round trip).
        using (var merged = Pipelines.Models.Checkpoints.Checkpoint.Load(ws.Store.ObjectPath(erase.Steps.Single(s => s.StepId == "refusal").Outputs["model"].Digest)))
        using (var rebuilt = Pipelines.Models.Checkpoints.Checkpoint.Load(fixture.ModelPath))
        using (var adapter = Pipelines.Models.Adapters.LoraAdapter.Load(Path.Combine(ws.Root, "real", "adapter"), rebuilt.Config))
        {
            adapter.Attach(rebuilt);
            using var ids = TorchSharp.torch.tensor(new long[,] { { 1, 5, 9, 14, 20, 33 } });
            using var _ = TorchSharp.torch.no_grad();
            using var unmerged = rebuilt.Forward(ids);
            using var expected = merged.Forward(ids);
            Assert.True(unmerged.sub(expected).abs().max().item<float>() < 1e-4);
        }
        var world = ConceptWorld.Read(ws.Store.ObjectPath(fixture.WorldDigest));
        var volcanoes = world.Questions.Where(q => q.Domain == "volcanoes").ToList();
        // WMDP's layout: a JSON array of {question, choices, answer (index)}; no split (the battery splits it 50/50).
        ws.Write("real/mcq.json", new JsonArray(volcanoes.Select(q => (JsonNode)new JsonObject
        {
            ["question"] = q.Question, ["choices"] = new JsonArray(q.Choices.Select(c => (JsonNode)c).ToArray()), ["answer"] = q.Answer,
        }).ToArray()).ToJsonString());
        var corpus = world.Corpus().ToList();
        ws.Write("real/forget.jsonl", string.Join("\n", corpus.Where(r => r["domain"]!.GetValue<string>() == "volcanoes" && r["kind"]!.GetValue<string>() == "passage")
            .Select(r => new JsonObject { ["text"] = r["text"]!.GetValue<string>() }.ToJsonString())) + "\n");
        ws.Write("real/retain.txt", string.Join("\n", corpus.Where(r => r["domain"]!.GetValue<string>() != "volcanoes" && r["kind"]!.GetValue<string>() == "passage").Select(r => r["text"]!.GetValue<string>())) + "\n");
        var workflow = File.ReadAllText(Path.Combine(Pipelines.Tests.Workflow.SchemaTests.RepoRoot(), "workflows", "erasure-probe-real.json"));
        var run = await ws.RunAsync(workflow, new Dictionary<string, string>
        {
            ["base"] = "real/base", ["erased"] = "real/adapter", ["mcq"] = "real/mcq.json", ["forget"] = "real/forget.jsonl", ["retain"] = "real/retain.txt",
            ["template"] = "question : {question} answer :", ["concept"] = "volcanoes", ["method"] = "refusal adapter", ["questions"] = "40", ["seed"] = "1",
        });
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var matrix = JsonNode.Parse(File.ReadAllText(ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == "report").Outputs["matrix"].Digest)))!;
        var row = matrix["methods"]![0]!;
        Assert.Equal("refusal adapter", row["method"]!.GetValue<string>());
        var probes = row["probes"]!.AsArray().ToDictionary(p => p!["probe"]!.GetValue<string>(), p => p!);
        Assert.True(probes["direct-open"]!["normalised"]!.GetValue<double>() < 0.25, row.ToJsonString());
        Assert.True(probes["likelihood"]!["raw"]!.GetValue<double>() > 0.8, row.ToJsonString());
        var html = File.ReadAllText(ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == "report").Outputs["report"].Digest));
        Assert.Contains("refusal adapter", html);
        Assert.Contains("<svg", html);
    }
}
