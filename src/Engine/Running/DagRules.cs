using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;

namespace Pipelines.Engine.Running;

/// <summary>What to do with a pending step now.</summary>
public enum StepDecision { Wait, Ready, Skip, Cancel }

/// <summary>
/// The one set of DAG rules (ready, skip, cancel, finish) that the in-process runner and the Hangfire scheduler both
/// call, so a run ends the same way whoever runs its steps.
/// </summary>
public static class DagRules
{
    public const string CancelledBeforeStart = "cancelled before it started";

    public static string SkippedBecause(string blocked) => $"skipped: step \"{blocked}\" did not succeed";

    public static bool Succeeded(StepStatus? status) => status is StepStatus.Computed or StepStatus.Cached;

    public static bool IsFinal(StepStatus status) =>
        status is StepStatus.Computed or StepStatus.Cached or StepStatus.Failed or StepStatus.Skipped or StepStatus.Cancelled;

    /// <summary>
    /// A pending step is cancelled when the run is, or when an upstream step was cancelled; skipped when an upstream
    /// step failed or was skipped; ready when every upstream step succeeded; otherwise it waits.
    /// <paramref name="statusOf"/> gives a step's status, or null while it has not finished.
    /// </summary>
    public static (StepDecision Decision, string? Error) Decide(PlannedStep step, Func<string, StepStatus?> statusOf, bool runCancelled)
    {
        if (runCancelled)
        {
            return (StepDecision.Cancel, CancelledBeforeStart);
        }
        var blocked = step.DependsOn.FirstOrDefault(d => statusOf(d) is StepStatus.Failed or StepStatus.Skipped or StepStatus.Cancelled);
        if (blocked is not null)
        {
            return statusOf(blocked) == StepStatus.Cancelled ? (StepDecision.Cancel, CancelledBeforeStart) : (StepDecision.Skip, SkippedBecause(blocked));
        }
        return step.DependsOn.All(d => Succeeded(statusOf(d))) ? (StepDecision.Ready, null) : (StepDecision.Wait, null);
    }

    /// <summary>A finished run's status from its steps' results.</summary>
    public static RunStatus Outcome(IReadOnlyList<StepResult> ordered, bool cancelled) =>
        ordered.All(r => r.Succeeded) ? RunStatus.Succeeded : cancelled || ordered.Any(r => r.Status == StepStatus.Cancelled) ? RunStatus.Cancelled : RunStatus.Failed;

    /// <summary>The run's error line: the first failed step.</summary>
    public static string? Error(IReadOnlyList<StepResult> ordered) =>
        ordered.FirstOrDefault(r => r.Status == StepStatus.Failed) is { } failed ? $"step \"{failed.StepId}\" failed: {failed.Error}" : null;
}
