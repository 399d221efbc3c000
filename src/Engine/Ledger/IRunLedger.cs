using Pipelines.Engine.Artifacts;

namespace Pipelines.Engine.Ledger;

/// <summary>
/// The run ledger: every run and step, with status, keys, timings, errors and output digests. SQLite by default;
/// the server fills the same interface with PostgreSQL.
/// </summary>
public interface IRunLedger : IDisposable
{
    Task CreateRunAsync(RunRecord run, CancellationToken ct = default);
    Task UpdateRunAsync(string runId, RunStatus status, DateTimeOffset? endedAt, string? error, CancellationToken ct = default);
    Task UpsertStepAsync(StepRecord step, CancellationToken ct = default);
    /// <summary>Several steps in one transaction.</summary>
    Task UpsertStepsAsync(IReadOnlyList<StepRecord> steps, CancellationToken ct = default);
    Task<RunRecord?> GetRunAsync(string runId, CancellationToken ct = default);
    /// <summary>Newest first.</summary>
    Task<IReadOnlyList<RunRecord>> ListRunsAsync(int limit, CancellationToken ct = default);
    Task<IReadOnlyList<StepRecord>> GetStepsAsync(string runId, CancellationToken ct = default);
    /// <summary>The same step in the newest earlier run of the same workflow that recorded a key for it.</summary>
    Task<(RunRecord Run, StepRecord Step)?> FindPreviousStepAsync(string workflowName, string stepId, DateTimeOffset before, string excludeRunId, CancellationToken ct = default);

    /// <summary>
    /// Atomically moves a step to <paramref name="to"/> if its status is one of <paramref name="from"/>; true when this
    /// call made the change. Distributed schedulers use it so that exactly one of them enqueues or skips a step.
    /// </summary>
    Task<bool> TransitionStepAsync(string runId, string stepId, IReadOnlyList<StepStatus> from, StepStatus to, string? error = null, CancellationToken ct = default);

    /// <summary>
    /// Records a checkpoint a trigger found, keyed by its content digest; true only for the first caller, which then
    /// starts its run. A checkpoint seen again (or copied elsewhere) never starts a second one.
    /// </summary>
    Task<bool> ClaimCheckpointAsync(string workflow, string trigger, string digest, string path, CancellationToken ct = default);

    Task SetCheckpointRunAsync(string workflow, string trigger, string digest, string runId, CancellationToken ct = default);

    /// <summary>The checkpoints a workflow's triggers found, oldest first.</summary>
    Task<IReadOnlyList<CheckpointRecord>> ListCheckpointsAsync(string workflow, CancellationToken ct = default);

    /// <summary>Atomically finishes or reopens a run if its status is <paramref name="from"/>; true when this call made the change.</summary>
    Task<bool> TransitionRunAsync(string runId, RunStatus from, RunStatus to, DateTimeOffset? endedAt, string? error, CancellationToken ct = default);
}
