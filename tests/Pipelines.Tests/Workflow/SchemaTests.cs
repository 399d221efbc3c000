using System.Text.Json.Nodes;
using Pipelines.Engine.Schema;

namespace Pipelines.Tests.Workflow;

public sealed class SchemaTests : IDisposable
{
    private readonly Workspace _ws = new();

    public static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Pipelines.sln")))
        {
            dir = dir.Parent;
        }
        return dir?.FullName ?? throw new InvalidOperationException("repository root not found");
    }

    [Fact]
    public void CommittedSchemaMatchesTheDescriptors()
    {
        var generated = WorkflowSchemaGenerator.Generate(_ws.Registry.All.Select(a => a.Descriptor));
        var committed = File.ReadAllText(Path.Combine(RepoRoot(), "workflows", "workflow.schema.json"));
        Assert.True(generated == committed, "workflows/workflow.schema.json is stale: run `pipelines schema -o workflows/workflow.schema.json`");
    }

    [Fact]
    public void SchemaDescribesEveryActivityAndItsInputs()
    {
        var schema = WorkflowSchemaGenerator.Build(_ws.Registry.All.Select(a => a.Descriptor));
        var types = schema["$defs"]!["step"]!["properties"]!["activity"]!["enum"]!.AsArray().Select(t => t!.GetValue<string>());
        Assert.Equal(_ws.Registry.All.Select(a => a.Descriptor.Type).Order(StringComparer.Ordinal), types);
        var sample = schema["$defs"]!["inputs:data.sample"]!;
        Assert.Equal(100, sample["properties"]!["count"]!["default"]!.GetValue<int>());
        Assert.Equal(1, sample["properties"]!["count"]!["anyOf"]![0]!["minimum"]!.GetValue<double>());
        Assert.Equal("dataset", sample["required"]![0]!.GetValue<string>());
        Assert.False(sample["additionalProperties"]!.GetValue<bool>());
    }

    [Fact]
    public void EveryExampleWorkflowReferencesTheSchemaAndValidates()
    {
        var root = RepoRoot();
        var files = Directory.GetFiles(Path.Combine(root, "workflows"), "*.json").Where(f => !f.EndsWith("workflow.schema.json")).ToList();
        Assert.NotEmpty(files);
        // mib-circuit.json needs a checkpoint directory: a tiny saved model stands in for the user's.
        var checkpoint = Path.Combine(_ws.Root, "checkpoint");
        using (var tiny = Pipelines.Tests.Models.TinyModels.Create("gpt2"))
        {
            Pipelines.Models.Checkpoints.Checkpoint.Save(tiny, checkpoint);
        }
        foreach (var file in files)
        {
            var json = File.ReadAllText(file);
            Assert.Equal("./workflow.schema.json", JsonNode.Parse(json)!["$schema"]!.GetValue<string>());
            var overrides = Path.GetFileName(file) switch
            {
                "mib-circuit.json" => new Dictionary<string, string> { ["model"] = checkpoint },
                "checkpoint-watch.json" => new Dictionary<string, string> { ["checkpoint"] = checkpoint, ["checkpoints"] = _ws.Root },
                "sd-sample.json" => new Dictionary<string, string> { ["path"] = _ws.Root },
                "erasure-probe-real.json" => new Dictionary<string, string>
                {
                    ["base"] = checkpoint, ["erased"] = checkpoint, ["mcq"] = _ws.Write("mcq.json", "[]"), ["forget"] = _ws.Write("forget.jsonl", "{}"), ["retain"] = _ws.Write("retain.jsonl", "{}"),
                },
                _ => new Dictionary<string, string>(),
            };
            var plan = _ws.Compiler.CompileText(json, file, overrides, new Pipelines.Engine.Validation.PathPolicy(root, [_ws.Root]));
            Assert.NotEmpty(plan.Steps);
        }
    }

    public void Dispose() => _ws.Dispose();
}
