using Pipelines.Engine.Ledger;

namespace Pipelines.Engine.Tests;

public sealed class CachingTests : IDisposable
{
    private readonly Workspace _ws = new();

    public CachingTests() => _ws.WriteDataset("data.jsonl", 500);

    [Fact]
    public async Task SecondRunComputesNothing()
    {
        var first = await _ws.RunAsync(Workflows.Chain);
        Assert.Equal(RunStatus.Succeeded, first.Status);
        Assert.Equal(4, first.Computed);

        var second = await _ws.RunAsync(Workflows.Chain);
        Assert.Equal(RunStatus.Succeeded, second.Status);
        Assert.Equal(0, second.Computed);
        Assert.Equal(4, second.Cached);
        Assert.All(second.Steps, s => Assert.Equal(first.RunId, s.CachedFromRunId));
        Assert.Equal(first.Steps.Select(s => s.Outputs.Values.Select(o => o.Digest)).SelectMany(x => x),
                     second.Steps.Select(s => s.Outputs.Values.Select(o => o.Digest)).SelectMany(x => x));
    }

    [Fact]
    public async Task ChangingOneLiteralRecomputesThatStepAndItsDescendantsOnly()
    {
        await _ws.RunAsync(Workflows.Chain);
        var changed = await _ws.RunAsync(Workflows.Chain.Replace("\"trainFraction\": 0.5", "\"trainFraction\": 0.6"));
        var status = changed.Steps.ToDictionary(s => s.StepId, s => s.Status);
        Assert.Equal(StepStatus.Cached, status["load"]);
        Assert.Equal(StepStatus.Cached, status["sample"]);
        Assert.Equal(StepStatus.Computed, status["split"]);
        Assert.Equal(StepStatus.Computed, status["report"]);
    }

    [Fact]
    public async Task ParameterOverrideRecomputesFromTheStepThatUsesIt()
    {
        await _ws.RunAsync(Workflows.Chain);
        var run = await _ws.RunAsync(Workflows.Chain, new Dictionary<string, string> { ["seed"] = "7" });
        Assert.Equal(["cached", "computed", "computed", "computed"], run.Steps.Select(s => s.Status.ToString().ToLowerInvariant()));
    }

    [Fact]
    public async Task WritingADefaultExplicitlyKeepsTheCacheKey()
    {
        var first = await _ws.RunAsync(Workflows.Chain);
        var explicitDefault = Workflows.Chain.Replace("\"trainFraction\": 0.5", "\"trainFraction\": 0.5, \"shuffle\": true, \"seed\": 0");
        var second = await _ws.RunAsync(explicitDefault);
        Assert.Equal(0, second.Computed);
        Assert.Equal(first.Steps.Select(s => s.CacheKey), second.Steps.Select(s => s.CacheKey));
    }

    [Fact]
    public async Task ChangedSourceFileRecomputesEverythingDownstream()
    {
        await _ws.RunAsync(Workflows.Chain);
        _ws.WriteDataset("data.jsonl", 500, seed: 2);
        var run = await _ws.RunAsync(Workflows.Chain);
        Assert.Equal(4, run.Computed);
    }

    [Fact]
    public async Task SameContentAtAnotherPathIsACacheHit()
    {
        await _ws.RunAsync(Workflows.Chain);
        File.Copy(Path.Combine(_ws.Root, "data.jsonl"), Path.Combine(_ws.Root, "copy.jsonl"));
        var run = await _ws.RunAsync(Workflows.Chain, new Dictionary<string, string> { ["data"] = "copy.jsonl" });
        Assert.Equal(0, run.Computed);
    }

    [Fact]
    public async Task NoCacheRecomputesAndGivesTheSameDigests()
    {
        var first = await _ws.RunAsync(Workflows.Chain);
        var options = new Pipelines.Engine.Running.RunOptions { WorkflowFile = "w.json", WorkflowText = Workflows.Chain, BaseDirectory = _ws.Root, UseCache = false };
        var again = await _ws.RunAsync(Workflows.Chain, options: options);
        Assert.Equal(4, again.Computed);
        Assert.Equal(first.Steps.SelectMany(s => s.Outputs.Values.Select(o => o.Digest)), again.Steps.SelectMany(s => s.Outputs.Values.Select(o => o.Digest)));
    }

    public void Dispose() => _ws.Dispose();
}
