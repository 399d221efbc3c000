using Pipelines.Engine.Activities;
using System.Collections.Concurrent;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Running;

namespace Pipelines.Engine.Tests;

public sealed class RunnerTests : IDisposable
{
    private readonly Workspace _ws = new();

    private const string TwoBranches = """
        {
          "name": "branches",
          "steps": [
            { "id": "good", "activity": "fx.load-jsonl", "inputs": { "path": "good.jsonl" } },
            { "id": "bad", "activity": "fx.load-jsonl", "inputs": { "path": "bad.jsonl" } },
            { "id": "sampleGood", "activity": "fx.sample", "inputs": { "dataset": { "from": "good.dataset" }, "count": 5 } },
            { "id": "sampleBad", "activity": "fx.sample", "inputs": { "dataset": { "from": "bad.dataset" }, "count": 5 } }
          ]
        }
        """;

    [Fact]
    public async Task AFailedStepSkipsItsDescendantsKeepsTheRestAndTheRunResumes()
    {
        _ws.WriteDataset("good.jsonl", 50);
        _ws.Write("bad.jsonl", "{\"id\": 1}\n{\"id\": 2,\n{\"id\": 3}\n");
        var failed = await _ws.RunAsync(TwoBranches);
        var status = failed.Steps.ToDictionary(s => s.StepId);
        Assert.Equal(RunStatus.Failed, failed.Status);
        Assert.Equal(StepStatus.Computed, status["good"].Status);
        Assert.Equal(StepStatus.Computed, status["sampleGood"].Status);
        Assert.Equal(StepStatus.Failed, status["bad"].Status);
        Assert.Contains("line 2: invalid JSON", status["bad"].Error);
        Assert.Equal(StepStatus.Skipped, status["sampleBad"].Status);
        Assert.True(_ws.Store.Contains(status["sampleGood"].Outputs["dataset"].Digest));

        var ledgerRun = await _ws.Ledger.GetRunAsync(failed.RunId);
        Assert.Equal(RunStatus.Failed, ledgerRun!.Status);
        Assert.Contains("bad", ledgerRun.Error);

        _ws.Write("bad.jsonl", "{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3}\n");
        var options = new RunOptions { RunId = failed.RunId, Kind = RunKind.Resume, WorkflowFile = "w.json", WorkflowText = TwoBranches, BaseDirectory = _ws.Root };
        var resumed = await _ws.RunAsync(TwoBranches, options: options);
        Assert.Equal(failed.RunId, resumed.RunId);
        Assert.Equal(RunStatus.Succeeded, resumed.Status);
        var after = resumed.Steps.ToDictionary(s => s.StepId, s => s.Status);
        Assert.Equal(StepStatus.Cached, after["good"]);
        Assert.Equal(StepStatus.Cached, after["sampleGood"]);
        Assert.Equal(StepStatus.Computed, after["bad"]);
        Assert.Equal(StepStatus.Computed, after["sampleBad"]);
        Assert.Equal(RunStatus.Succeeded, (await _ws.Ledger.GetRunAsync(failed.RunId))!.Status);
    }

    [Fact]
    public async Task IndependentStepsRunInParallelWithinTheBound()
    {
        // Two steps that can only finish if they run at the same time.
        using var barrierSpace = new Workspace();
        var group = Guid.NewGuid().ToString("N");
        var json = $$"""
            { "name": "parallel", "steps": [
              { "id": "a", "activity": "test.barrier", "inputs": { "group": "{{group}}", "tag": 1 } },
              { "id": "b", "activity": "test.barrier", "inputs": { "group": "{{group}}", "tag": 2 } } ] }
            """;
        var parallel = await barrierSpace.RunAsync(json, options: new RunOptions { WorkflowFile = "w.json", WorkflowText = json, BaseDirectory = barrierSpace.Root, MaxParallel = 2 });
        Assert.True(parallel.Status == RunStatus.Succeeded, string.Join("; ", parallel.Steps.Select(s => s.Error)));

        var options = new RunOptions { WorkflowFile = "w.json", WorkflowText = TwoBranches, BaseDirectory = _ws.Root, MaxParallel = 2 };

        using var serial = new Workspace();
        serial.WriteDataset("good.jsonl", 1000);
        serial.WriteDataset("bad.jsonl", 1000, seed: 3);
        var one = new ConcurrencyObserver();
        await serial.RunAsync(TwoBranches, options: options with { MaxParallel = 1, BaseDirectory = serial.Root }, observer: one);
        Assert.Equal(1, one.Max);
    }

    [Fact]
    public async Task TwoConcurrentRunsComputeEachStepOnce()
    {
        _ws.WriteDataset("data.jsonl", 20_000);
        var a = _ws.RunAsync(Workflows.Chain);
        var b = _ws.RunAsync(Workflows.Chain);
        var results = await Task.WhenAll(a, b);
        Assert.All(results, r => Assert.Equal(RunStatus.Succeeded, r.Status));
        foreach (var step in new[] { "load", "sample", "split", "report" })
        {
            var statuses = results.Select(r => r.Steps.Single(s => s.StepId == step).Status).ToList();
            Assert.Equal(1, statuses.Count(s => s == StepStatus.Computed));
            Assert.Equal(1, statuses.Count(s => s == StepStatus.Cached));
        }
    }

    [Fact]
    public async Task CancellationKeepsFinishedStepsAndTheRunResumes()
    {
        _ws.WriteDataset("data.jsonl", 100_000);
        using var cts = new CancellationTokenSource();
        var observer = new CancelAfter("load", cts);
        var plan = _ws.Compile(Workflows.Chain, new Dictionary<string, string> { ["count"] = "100000" });
        var options = new RunOptions { WorkflowFile = "w.json", WorkflowText = Workflows.Chain, BaseDirectory = _ws.Root, MaxParallel = 1, Overrides = new Dictionary<string, string> { ["count"] = "100000" } };
        var cancelled = await _ws.Runner.RunAsync(plan, options, observer, cts.Token);
        Assert.Equal(RunStatus.Cancelled, cancelled.Status);
        var status = cancelled.Steps.ToDictionary(s => s.StepId, s => s.Status);
        Assert.Equal(StepStatus.Computed, status["load"]);
        Assert.Equal(StepStatus.Cancelled, status["report"]);
        Assert.True(_ws.Store.Contains(cancelled.Steps[0].Outputs["dataset"].Digest));
        Assert.Empty(Directory.EnumerateFileSystemEntries(_ws.Store.TempDirectory)); // scratch of the cancelled step is gone

        var resumed = await _ws.Runner.RunAsync(plan, options with { RunId = cancelled.RunId, Kind = RunKind.Resume });
        Assert.Equal(RunStatus.Succeeded, resumed.Status);
        Assert.Equal(StepStatus.Cached, resumed.Steps[0].Status);
    }

    [Fact]
    public async Task RunLockFileRecordsKeysDigestsAndTheDefinition()
    {
        _ws.WriteDataset("data.jsonl", 100);
        var run = await _ws.RunAsync(Workflows.Chain);
        var doc = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(run.LockFile))!;
        Assert.Equal(run.RunId, doc["runId"]!.GetValue<string>());
        Assert.Equal("chain", doc["workflow"]!["name"]!.GetValue<string>());
        Assert.Equal(50, doc["parameters"]!["count"]!.GetValue<int>());
        var split = doc["steps"]!["split"]!;
        Assert.Equal(run.Steps[2].CacheKey, split["cacheKey"]!.GetValue<string>());
        Assert.Equal(run.Steps[2].Outputs["train"].Digest, split["outputs"]!["train"]!["digest"]!.GetValue<string>());
        Assert.Equal(0.5, split["key"]!["inputs"]!["trainFraction"]!.GetValue<double>());
        Assert.True(File.Exists(Path.Combine(_ws.Store.RunsDirectory, run.RunId, "outputs", "report", "report.json")));
        // What a bit-exact reproduction on another machine needs to match: the cores libtorch would use.
        Assert.Equal(Environment.ProcessorCount, doc["host"]!["cpus"]!.GetValue<int>());
        Assert.Equal(Environment.GetEnvironmentVariable("OMP_NUM_THREADS") is { Length: > 0 }, doc["host"]!.AsObject().ContainsKey("ompNumThreads"));
    }

    private sealed class ConcurrencyObserver : IRunObserver
    {
        private int _now;
        public int Max;

        public void StepStarted(string stepId)
        {
            var now = Interlocked.Increment(ref _now);
            int seen;
            while (now > (seen = Max) && Interlocked.CompareExchange(ref Max, now, seen) != seen)
            {
            }
        }

        public void StepFinished(StepResult result)
        {
            if (result.Status is StepStatus.Computed or StepStatus.Cached or StepStatus.Failed)
            {
                Interlocked.Decrement(ref _now);
            }
        }
    }

    private sealed class CancelAfter(string step, CancellationTokenSource cts) : IRunObserver
    {
        public void StepFinished(StepResult result)
        {
            if (result.StepId == step)
            {
                cts.Cancel();
            }
        }
    }

    public void Dispose() => _ws.Dispose();
}
