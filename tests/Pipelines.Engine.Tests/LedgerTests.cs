using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;

namespace Pipelines.Engine.Tests;

public sealed class LedgerTests : IDisposable
{
    private readonly Workspace _ws = new();

    [Fact]
    public async Task RunsAndStepsRoundTrip()
    {
        var started = DateTimeOffset.UtcNow;
        var run = new RunRecord("r1", "wf", "/w.json", "{}", new Dictionary<string, string> { ["seed"] = "3" }, "/base", ["/base", "/data"],
            RunKind.Run, null, RunStatus.Running, started, null, null);
        await _ws.Ledger.CreateRunAsync(run);
        var outputs = new Dictionary<string, OutputRecord> { ["dataset"] = new("abc", "Dataset", "application/x-ndjson", 12, "d.jsonl", false) };
        await _ws.Ledger.UpsertStepAsync(new StepRecord("r1", "load", "fx.load-jsonl", 1, StepStatus.Computed, "key", "{}", started, started, 5, null, outputs));
        await _ws.Ledger.UpdateRunAsync("r1", RunStatus.Succeeded, started.AddSeconds(1), null);

        var read = await _ws.Ledger.GetRunAsync("r1");
        Assert.Equal(RunStatus.Succeeded, read!.Status);
        Assert.Equal("3", read.Overrides["seed"]);
        Assert.Equal(["/base", "/data"], read.AllowedRoots);
        var step = Assert.Single(await _ws.Ledger.GetStepsAsync("r1"));
        Assert.Equal("abc", step.Outputs!["dataset"].Digest);
        Assert.Equal(StepStatus.Computed, step.Status);
        Assert.Null(await _ws.Ledger.GetRunAsync("nope"));
    }

    [Fact]
    public async Task FindsTheSameStepInTheNewestEarlierRunOfTheWorkflow()
    {
        _ws.WriteDataset("data.jsonl", 50);
        var a = await _ws.RunAsync(Workflows.Chain);
        var b = await _ws.RunAsync(Workflows.Chain, new Dictionary<string, string> { ["seed"] = "4" });
        var bRecord = (await _ws.Ledger.GetRunAsync(b.RunId))!;
        var previous = await _ws.Ledger.FindPreviousStepAsync("chain", "sample", bRecord.StartedAt, b.RunId);
        Assert.Equal(a.RunId, previous!.Value.Run.Id);
        Assert.NotEqual(b.Steps[1].CacheKey, previous.Value.Step.CacheKey);
        Assert.Equal(b.RunId, (await _ws.Ledger.ListRunsAsync(1))[0].Id);
    }

    public void Dispose() => _ws.Dispose();
}

/// <summary>The ledger conformance suite on the embedded SQLite ledger.</summary>
public sealed class SqliteLedgerConformance : Pipelines.Tests.Shared.LedgerConformance
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "pipelines-ledger-" + Guid.NewGuid().ToString("N")[..8]);

    protected override IRunLedger CreateLedger()
    {
        Directory.CreateDirectory(_dir);
        return new SqliteRunLedger(Path.Combine(_dir, "ledger.db"));
    }

    public override void Dispose()
    {
        base.Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_dir, recursive: true);
    }
}
