using System.Text.Json.Nodes;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Running;

namespace Pipelines.Engine.Tests;

/// <summary>The durable scratch directory tied to a step's cache key.</summary>
public sealed class ResumeDirectoryTests : IDisposable
{
    private readonly Workspace _ws = new();

    private static string Count(int steps, int failAt) => $$"""
        { "name": "count", "steps": [ { "id": "count", "activity": "fx.count", "inputs": { "steps": {{steps}}, "failAt": {{failAt}} } } ] }
        """;

    [Fact]
    public async Task AFailedStepKeepsItsSaveAndTheRerunContinuesFromIt()
    {
        var failed = await _ws.RunAsync(Count(10, 4));
        Assert.Equal(RunStatus.Failed, failed.Status);
        var key = failed.Steps[0].CacheKey!;
        Assert.Equal("4", File.ReadAllText(Path.Combine(_ws.Store.ResumeDirectory, key, "count.txt")));

        var options = new RunOptions { RunId = failed.RunId, Kind = RunKind.Resume, WorkflowFile = "w.json", WorkflowText = Count(10, 4), BaseDirectory = _ws.Root };
        var resumed = await _ws.RunAsync(Count(10, 4), options: options);
        Assert.Equal(RunStatus.Succeeded, resumed.Status);
        var result = JsonNode.Parse(File.ReadAllText(_ws.Store.ObjectPath(resumed.Steps[0].Outputs["result"].Digest)))!;
        Assert.Equal(4, result["resumedFrom"]!.GetValue<int>());
        Assert.Equal([5, 6, 7, 8, 9, 10], result["executed"]!.AsArray().Select(n => n!.GetValue<int>()));
        Assert.False(Directory.Exists(Path.Combine(_ws.Store.ResumeDirectory, key))); // completed: the save is gone
    }

    [Fact]
    public async Task OtherInputsNeverSeeASave()
    {
        var failed = await _ws.RunAsync(Count(10, 4));
        Assert.Equal(RunStatus.Failed, failed.Status);
        var other = await _ws.RunAsync(Count(12, 0)); // another key: starts from nothing
        var result = JsonNode.Parse(File.ReadAllText(_ws.Store.ObjectPath(other.Steps[0].Outputs["result"].Digest)))!;
        Assert.Equal(0, result["resumedFrom"]!.GetValue<int>());
        Assert.True(Directory.Exists(Path.Combine(_ws.Store.ResumeDirectory, failed.Steps[0].CacheKey!))); // still there for its own rerun
    }

    public void Dispose() => _ws.Dispose();
}
