using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;

namespace Pipelines.Tests.Shared;

/// <summary>
/// One conformance suite for every <see cref="IRunLedger"/>: SQLite runs it in the fast tier, PostgreSQL (a real
/// server started by the test) in the integration tier. A ledger passes when it keeps what it is given, orders and
/// finds runs as documented, and makes its atomic transitions and checkpoint claims exactly-once under contention.
/// </summary>
public abstract class LedgerConformance : IDisposable
{
    private readonly Lazy<IRunLedger> _ledger;

    protected LedgerConformance() => _ledger = new Lazy<IRunLedger>(CreateLedger, LazyThreadSafetyMode.ExecutionAndPublication);

    /// <summary>A fresh, empty ledger (called once per test, even when the test's first use is from many threads).</summary>
    protected abstract IRunLedger CreateLedger();

    protected IRunLedger Ledger => _ledger.Value;

    private static RunRecord Run(string id, string workflow, DateTimeOffset started, RunStatus status = RunStatus.Running) => new(
        Id: id, WorkflowName: workflow, WorkflowFile: "/w.json", WorkflowText: "{}", Overrides: new Dictionary<string, string> { ["seed"] = "3" },
        BaseDirectory: "/base", AllowedRoots: ["/base", "/data"], Kind: RunKind.Run, OriginRunId: null, Status: status,
        StartedAt: started, EndedAt: null, Error: null);

    private static StepRecord Step(string run, string step, StepStatus status, string? key = "key", string? error = null) => new(
        RunId: run, StepId: step, Activity: "data.sample", ActivityVersion: 1, Status: status, CacheKey: key, KeyMaterial: "{}",
        StartedAt: null, EndedAt: null, DurationMs: null, Error: error,
        Outputs: status == StepStatus.Computed ? new Dictionary<string, OutputRecord> { ["dataset"] = new("abc", "Dataset", "application/x-ndjson", 12, "d.jsonl", false) } : null);

    private static readonly DateTimeOffset T0 = new(2026, 11, 30, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public async Task RunsAndStepsRoundTrip()
    {
        await Ledger.CreateRunAsync(Run("r1", "wf", T0));
        await Ledger.UpsertStepAsync(Step("r1", "load", StepStatus.Computed));
        await Ledger.UpdateRunAsync("r1", RunStatus.Succeeded, T0.AddSeconds(1), null);
        var read = (await Ledger.GetRunAsync("r1"))!;
        Assert.Equal(RunStatus.Succeeded, read.Status);
        Assert.Equal("3", read.Overrides["seed"]);
        Assert.Equal(["/base", "/data"], read.AllowedRoots);
        Assert.Equal(T0, read.StartedAt);
        Assert.Equal(T0.AddSeconds(1), read.EndedAt);
        var step = Assert.Single(await Ledger.GetStepsAsync("r1"));
        Assert.Equal("abc", step.Outputs!["dataset"].Digest);
        Assert.Equal(StepStatus.Computed, step.Status);
        Assert.Null(await Ledger.GetRunAsync("nope"));
        Assert.Empty(await Ledger.GetStepsAsync("nope"));
    }

    [Fact]
    public async Task UpsertReplacesAStepAndBatchesWriteEveryStep()
    {
        await Ledger.CreateRunAsync(Run("r1", "wf", T0));
        await Ledger.UpsertStepAsync(Step("r1", "a", StepStatus.Running));
        await Ledger.UpsertStepAsync(Step("r1", "a", StepStatus.Failed, error: "boom"));
        await Ledger.UpsertStepsAsync([Step("r1", "b", StepStatus.Pending, key: null), Step("r1", "c", StepStatus.Skipped, key: null)]);
        var steps = (await Ledger.GetStepsAsync("r1")).ToDictionary(s => s.StepId);
        Assert.Equal(3, steps.Count);
        Assert.Equal(StepStatus.Failed, steps["a"].Status);
        Assert.Equal("boom", steps["a"].Error);
        Assert.Null(steps["b"].CacheKey);
        Assert.Equal(StepStatus.Skipped, steps["c"].Status);
    }

    [Fact]
    public async Task RunsAreListedNewestFirstAndPreviousStepsFoundInTheSameWorkflowOnly()
    {
        await Ledger.CreateRunAsync(Run("old", "wf", T0));
        await Ledger.CreateRunAsync(Run("other", "another", T0.AddMinutes(1)));
        await Ledger.CreateRunAsync(Run("mid", "wf", T0.AddMinutes(2)));
        await Ledger.CreateRunAsync(Run("new", "wf", T0.AddMinutes(3)));
        await Ledger.UpsertStepAsync(Step("old", "s", StepStatus.Computed, key: "k-old"));
        await Ledger.UpsertStepAsync(Step("other", "s", StepStatus.Computed, key: "k-other"));
        await Ledger.UpsertStepAsync(Step("mid", "s", StepStatus.Computed, key: "k-mid"));
        await Ledger.UpsertStepAsync(Step("new", "s", StepStatus.Computed, key: "k-new"));
        Assert.Equal(["new", "mid", "other", "old"], (await Ledger.ListRunsAsync(10)).Select(r => r.Id));
        Assert.Equal(["new", "mid"], (await Ledger.ListRunsAsync(2)).Select(r => r.Id));
        var previous = (await Ledger.FindPreviousStepAsync("wf", "s", T0.AddMinutes(3), "new"))!.Value;
        Assert.Equal("mid", previous.Run.Id);
        Assert.Equal("k-mid", previous.Step.CacheKey);
        Assert.Equal("old", (await Ledger.FindPreviousStepAsync("wf", "s", T0.AddMinutes(2), "mid"))!.Value.Run.Id);
        Assert.Null(await Ledger.FindPreviousStepAsync("wf", "s", T0, "old"));
        Assert.Null(await Ledger.FindPreviousStepAsync("wf", "missing", T0.AddMinutes(9), "x"));
    }

    [Fact]
    public async Task StepTransitionsHappenOnlyFromTheGivenStatesAndExactlyOnceUnderContention()
    {
        await Ledger.CreateRunAsync(Run("r1", "wf", T0));
        await Ledger.UpsertStepAsync(Step("r1", "a", StepStatus.Pending, key: null));
        Assert.False(await Ledger.TransitionStepAsync("r1", "a", [StepStatus.Running], StepStatus.Computed));
        var winners = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() => Ledger.TransitionStepAsync("r1", "a", [StepStatus.Pending], StepStatus.Queued))));
        Assert.Equal(1, winners.Count(w => w));
        Assert.True(await Ledger.TransitionStepAsync("r1", "a", [StepStatus.Queued, StepStatus.Running], StepStatus.Skipped, "an upstream step failed"));
        var step = Assert.Single(await Ledger.GetStepsAsync("r1"));
        Assert.Equal(StepStatus.Skipped, step.Status);
        Assert.Equal("an upstream step failed", step.Error);
        Assert.False(await Ledger.TransitionStepAsync("r1", "missing", [StepStatus.Pending], StepStatus.Queued));
    }

    [Fact]
    public async Task RunTransitionsAreExactlyOnce()
    {
        await Ledger.CreateRunAsync(Run("r1", "wf", T0));
        var winners = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => Task.Run(() => Ledger.TransitionRunAsync("r1", RunStatus.Running, RunStatus.Succeeded, T0.AddSeconds(5), null))));
        Assert.Equal(1, winners.Count(w => w));
        Assert.False(await Ledger.TransitionRunAsync("r1", RunStatus.Running, RunStatus.Failed, T0, "late"));
        var run = (await Ledger.GetRunAsync("r1"))!;
        Assert.Equal(RunStatus.Succeeded, run.Status);
        Assert.Null(run.Error);
        Assert.True(await Ledger.TransitionRunAsync("r1", RunStatus.Succeeded, RunStatus.Running, null, null)); // reopened by resume
    }

    [Fact]
    public async Task ACheckpointIsClaimedOnceAndListedWithItsRun()
    {
        var claims = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => Task.Run(() => Ledger.ClaimCheckpointAsync("wf", "t", "digest-1", $"/ckpt/copy-{i}"))));
        Assert.Equal(1, claims.Count(c => c));
        Assert.True(await Ledger.ClaimCheckpointAsync("wf", "t", "digest-2", "/ckpt/b"));
        Assert.True(await Ledger.ClaimCheckpointAsync("wf", "other-trigger", "digest-1", "/ckpt/a")); // per trigger
        await Ledger.SetCheckpointRunAsync("wf", "t", "digest-1", "run-1");
        var list = await Ledger.ListCheckpointsAsync("wf");
        Assert.Equal(3, list.Count);
        Assert.Equal("run-1", list.Single(c => c.Trigger == "t" && c.Digest == "digest-1").RunId);
        Assert.Null(list.Single(c => c.Digest == "digest-2").RunId);
        Assert.Empty(await Ledger.ListCheckpointsAsync("nobody"));
    }

    public virtual void Dispose()
    {
        if (_ledger.IsValueCreated)
        {
            _ledger.Value.Dispose();
        }
        GC.SuppressFinalize(this);
    }
}
