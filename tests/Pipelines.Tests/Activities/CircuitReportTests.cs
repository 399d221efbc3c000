using Pipelines.Engine.Ledger;

namespace Pipelines.Tests.Activities;

public sealed class CircuitReportTests : IDisposable
{
    private readonly Workspace _ws = new();

    [Fact]
    public async Task ReportDrawsTheCircuitAndCurveAndIsDeterministic()
    {
        _ws.Write("circuit.json", """
            { "cfg": { "n_layers": 2, "n_heads": 4, "parallel_attn_mlp": false, "d_model": 64 },
              "nodes": {},
              "edges": {
                "input->a0.h2<k>": { "score": 0.9, "in_graph": true },
                "a0.h2->m0": { "score": 0.4, "in_graph": true },
                "a0.h2->logits": { "score": -0.3, "in_graph": true },
                "m0->logits": { "score": 0.2, "in_graph": true },
                "input->m1": { "score": 0.1, "in_graph": false } } }
            """);
        _ws.Write("faithfulness.json", """
            { "metric": "logit difference", "pairs": 8, "edges": 110, "mFull": 4, "mEmpty": 1, "cpr": 1.02, "cmd": 0.04,
              "signed": [ { "fraction": 0.05, "faithfulness": 1.07 }, { "fraction": 1, "faithfulness": 1 } ],
              "absolute": [ { "fraction": 0.05, "faithfulness": 0.97 }, { "fraction": 1, "faithfulness": 1 } ] }
            """);
        // The engine passes file inputs as artifacts: load them as datasets-free JSON artifacts through a tiny chain.
        var json = """
            { "name": "report", "steps": [
              { "id": "report", "activity": "report.circuit", "inputs": { "circuit": { "from": "c.circuit" }, "faithfulness": { "from": "f.metrics" }, "title": "Test circuit" } },
              { "id": "c", "activity": "test.file", "inputs": { "path": "circuit.json", "kind": "circuit" } },
              { "id": "f", "activity": "test.file", "inputs": { "path": "faithfulness.json", "kind": "json" } } ] }
            """;
        using var ws = new Workspace(s => Pipelines.Engine.Activities.ActivityServiceCollectionExtensions.AddActivity<FileArtifactActivity>(s));
        File.Copy(Path.Combine(_ws.Root, "circuit.json"), Path.Combine(ws.Root, "circuit.json"));
        File.Copy(Path.Combine(_ws.Root, "faithfulness.json"), Path.Combine(ws.Root, "faithfulness.json"));
        var run = await ws.RunAsync(json);
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var outputs = run.Steps.Single(s => s.StepId == "report").Outputs;
        var png = File.ReadAllBytes(ws.Store.ObjectPath(outputs["diagram"].Digest));
        Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }, png[..4]);
        Assert.Contains("<svg", File.ReadAllText(ws.Store.ObjectPath(outputs["diagramSvg"].Digest)));
        var html = File.ReadAllText(ws.Store.ObjectPath(outputs["report"].Digest));
        Assert.Contains("input-&gt;a0.h2&lt;k&gt;", html);
        Assert.DoesNotContain("input-&gt;m1", html); // not in the circuit
        Assert.Contains("data:image/png;base64,", html);
        Assert.Contains("cpr", html);

        var again = await ws.RunAsync(json, options: new Pipelines.Engine.Running.RunOptions { WorkflowFile = "w.json", WorkflowText = json, BaseDirectory = ws.Root, UseCache = false });
        Assert.Equal(outputs.Values.Select(o => o.Digest), again.Steps.Single(s => s.StepId == "report").Outputs.Values.Select(o => o.Digest));
    }

    public void Dispose() => _ws.Dispose();
}

/// <summary>Test-only: turns a file into an artifact of a chosen kind (circuit or json).</summary>
[Pipelines.Engine.Activities.Activity("test.file", Category = "Test", Summary = "A file as an artifact (tests only)")]
[Pipelines.Engine.Activities.Output("circuit", Pipelines.Engine.Activities.ArtifactKinds.Circuit, FileName = "circuit.json")]
[Pipelines.Engine.Activities.Output("metrics", Pipelines.Engine.Activities.ArtifactKinds.Json, FileName = "metrics.json")]
public sealed class FileArtifactActivity : Pipelines.Engine.Activities.Activity<FileArtifactActivity.Input>
{
    public sealed record Input
    {
        [Pipelines.Engine.Activities.Input("The file", IsPath = true)]
        public required string Path { get; init; }

        [Pipelines.Engine.Activities.Input("circuit or json")]
        public string Kind { get; init; } = "json";
    }

    protected override Task ExecuteAsync(Input input, Pipelines.Engine.Activities.ActivityContext context)
    {
        File.Copy(input.Path, context.OutputFile("circuit"));
        File.Copy(input.Path, context.OutputFile("metrics"));
        return Task.CompletedTask;
    }
}
