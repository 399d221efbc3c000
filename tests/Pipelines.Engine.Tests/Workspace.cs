using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;
using Pipelines.Engine.Running;
using Pipelines.Engine.Validation;

namespace Pipelines.Engine.Tests;

/// <summary>A temporary directory with a store, a ledger and the fixture activities: everything an engine run needs.</summary>
public sealed class Workspace : IDisposable
{
    private readonly ServiceProvider _services;

    public Workspace(Action<IServiceCollection>? extra = null)
    {
        Root = Path.Combine(Path.GetTempPath(), "pipelines-tests", Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Root);
        var collection = new ServiceCollection();
        extra?.Invoke(collection);
        collection.AddActivity<FxLoadActivity>().AddActivity<FxSampleActivity>().AddActivity<FxSplitActivity>()
            .AddActivity<FxReportActivity>().AddActivity<FxCountActivity>().AddActivity<BarrierActivity>();
        collection.AddSingleton(new ExecutionEnvironment().Set("fixture", "1"));
        _services = collection.AddActivityRegistry().BuildServiceProvider();
        Store = new ArtifactStore(Path.Combine(Root, "artifacts"));
        Ledger = new SqliteRunLedger(Path.Combine(Store.Root, "ledger.db"));
        Runner = new InProcessRunner(Store, Ledger, _services.GetRequiredService<ExecutionEnvironment>(), _services);
    }

    public string Root { get; }
    public ArtifactStore Store { get; }
    public SqliteRunLedger Ledger { get; }
    public InProcessRunner Runner { get; }
    public ActivityRegistry Registry => _services.GetRequiredService<ActivityRegistry>();
    public WorkflowCompiler Compiler => new(Registry);
    public PathPolicy Paths => new(Root, []);

    public string Write(string name, string text)
    {
        var path = Path.Combine(Root, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    /// <summary>Writes a JSONL dataset of <paramref name="count"/> rows {"id", "text", "label"}.</summary>
    public string WriteDataset(string name, int count, int seed = 1)
    {
        var path = Path.Combine(Root, name);
        using var writer = new StreamWriter(path) { NewLine = "\n" };
        for (var i = 0; i < count; i++)
        {
            writer.WriteLine(new JsonObject { ["id"] = i, ["text"] = $"example {i * seed} of the set", ["label"] = i % 7 }.ToJsonString());
        }
        return path;
    }

    public ExecutionPlan Compile(string json, IReadOnlyDictionary<string, string>? overrides = null) =>
        Compiler.CompileText(json, Path.Combine(Root, "workflow.json"), overrides ?? new Dictionary<string, string>(), Paths);

    public Task<RunResult> RunAsync(string json, IReadOnlyDictionary<string, string>? overrides = null, RunOptions? options = null,
        IRunObserver? observer = null, CancellationToken ct = default)
    {
        var plan = Compile(json, overrides);
        options ??= new RunOptions { WorkflowFile = Path.Combine(Root, "workflow.json"), WorkflowText = json, BaseDirectory = Root };
        return Runner.RunAsync(plan, options with { Overrides = overrides ?? new Dictionary<string, string>() }, observer, ct);
    }

    public void Dispose()
    {
        Ledger.Dispose();
        _services.Dispose();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>Workflows the tests share.</summary>
public static class Workflows
{
    /// <summary>fx.load-jsonl → fx.sample → fx.split → fx.report, over a dataset file named by a parameter.</summary>
    public const string Chain = """
        {
          "name": "chain",
          "parameters": {
            "data": { "type": "path", "default": "data.jsonl" },
            "count": { "type": "integer", "default": 50 },
            "seed": { "type": "integer", "default": 0 }
          },
          "steps": [
            { "id": "load", "activity": "fx.load-jsonl", "inputs": { "path": { "param": "data" } } },
            { "id": "sample", "activity": "fx.sample", "inputs": { "dataset": { "from": "load.dataset" }, "count": { "param": "count" }, "seed": { "param": "seed" } } },
            { "id": "split", "activity": "fx.split", "inputs": { "dataset": { "from": "sample.dataset" }, "trainFraction": 0.5 } },
            { "id": "report", "activity": "fx.report", "inputs": { "datasets": [ { "from": "split.train" }, { "from": "split.test" } ] } }
          ]
        }
        """;
}
