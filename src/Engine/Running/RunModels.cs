using Pipelines.Engine.Activities;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;

namespace Pipelines.Engine.Running;

/// <summary>How to run a plan.</summary>
public sealed record RunOptions
{
    /// <summary>Set to resume an existing run under its own id.</summary>
    public string? RunId { get; init; }
    public RunKind Kind { get; init; } = RunKind.Run;
    public string? OriginRunId { get; init; }
    /// <summary>False recomputes every step (reproduce); results are still stored.</summary>
    public bool UseCache { get; init; } = true;
    public int MaxParallel { get; init; } = Math.Max(1, Environment.ProcessorCount);
    public required string WorkflowFile { get; init; }
    public required string WorkflowText { get; init; }
    public IReadOnlyDictionary<string, string> Overrides { get; init; } = new Dictionary<string, string>();
    public required string BaseDirectory { get; init; }
    public IReadOnlyList<string> AllowedRoots { get; init; } = [];

    /// <summary>The options that reproduce a recorded run's inputs: its workflow text, overrides and path policy.</summary>
    public static RunOptions From(RunRecord run) => new()
    {
        WorkflowFile = run.WorkflowFile, WorkflowText = run.WorkflowText, Overrides = run.Overrides,
        BaseDirectory = run.BaseDirectory, AllowedRoots = run.AllowedRoots,
    };

    /// <summary>The options a scheduler runs a recorded run's steps with: the run's own id, kind and cache use.</summary>
    public static RunOptions ForRecordedRun(RunRecord run) => From(run) with
    {
        RunId = run.Id, Kind = run.Kind, OriginRunId = run.OriginRunId, UseCache = run.Kind != RunKind.Reproduce,
    };
}

/// <summary>The outcome of one step.</summary>
public sealed record StepResult(
    string StepId,
    string Activity,
    StepStatus Status,
    string? CacheKey,
    TimeSpan Duration,
    IReadOnlyDictionary<string, OutputRecord> Outputs,
    string? Error,
    string? CachedFromRunId = null,
    KeyMaterial? Material = null)
{
    public bool Succeeded => Status is StepStatus.Computed or StepStatus.Cached;
}

/// <summary>The outcome of a run.</summary>
public sealed record RunResult(string RunId, RunStatus Status, IReadOnlyList<StepResult> Steps, TimeSpan Duration, string LockFile)
{
    public int Computed => Steps.Count(s => s.Status == StepStatus.Computed);
    public int Cached => Steps.Count(s => s.Status == StepStatus.Cached);
}

/// <summary>Live events of a run, for progress displays and the server's event stream.</summary>
public interface IRunObserver
{
    void RunStarted(string runId, ExecutionPlan plan) { }
    void StepStarted(string stepId) { }
    void StepProgress(string stepId, StepProgress progress) { }
    void StepLog(string stepId, string message) { }
    void StepFinished(StepResult result) { }
    void Warning(string message) { }
    void RunFinished(RunResult result) { }
}

/// <summary>An observer that ignores everything.</summary>
public sealed class NullRunObserver : IRunObserver
{
    public static readonly NullRunObserver Instance = new();
}
