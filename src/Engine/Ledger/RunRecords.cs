using Pipelines.Engine.Artifacts;

namespace Pipelines.Engine.Ledger;

public enum RunStatus { Running, Succeeded, Failed, Cancelled }

public enum StepStatus { Pending, Running, Computed, Cached, Failed, Skipped, Cancelled, Queued }

/// <summary>How a run was started: fresh, resumed, or reproducing another run.</summary>
public enum RunKind { Run, Resume, Reproduce }

/// <summary>A run as the ledger keeps it: enough to resume or reproduce it.</summary>
/// <param name="WorkflowText">The workflow JSON exactly as it was read.</param>
/// <param name="Overrides">The <c>--set</c> assignments, as given.</param>
/// <param name="BaseDirectory">The directory relative paths resolved against.</param>
public sealed record RunRecord(
    string Id,
    string WorkflowName,
    string WorkflowFile,
    string WorkflowText,
    IReadOnlyDictionary<string, string> Overrides,
    string BaseDirectory,
    IReadOnlyList<string> AllowedRoots,
    RunKind Kind,
    string? OriginRunId,
    RunStatus Status,
    DateTimeOffset StartedAt,
    DateTimeOffset? EndedAt,
    string? Error);

/// <summary>One step of one run.</summary>
public sealed record StepRecord(
    string RunId,
    string StepId,
    string Activity,
    int ActivityVersion,
    StepStatus Status,
    string? CacheKey,
    string? KeyMaterial,
    DateTimeOffset? StartedAt,
    DateTimeOffset? EndedAt,
    double? DurationMs,
    string? Error,
    IReadOnlyDictionary<string, OutputRecord>? Outputs,
    string? CachedFromRunId = null);


/// <summary>A checkpoint found by a workflow's trigger, and the run it started.</summary>
public sealed record CheckpointRecord(string Workflow, string Trigger, string Digest, string Path, string? RunId, DateTimeOffset SeenAt);
