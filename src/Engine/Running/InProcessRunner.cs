using System.Diagnostics;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;

namespace Pipelines.Engine.Running;

/// <summary>
/// Runs a plan in this process: steps in dependency order, independent ones in parallel (bounded), each one a cache
/// hit or a computation whose outputs enter the store. A failed step skips its descendants; other branches go on.
/// </summary>
public sealed class InProcessRunner(ArtifactStore store, IRunLedger ledger, ExecutionEnvironment environment, IServiceProvider? services = null)
{
    private readonly StepExecutor _executor = new(store, ledger, environment, services);
    private readonly RunPublisher _publisher = new(store, environment);

    public ArtifactStore Store => store;

    public async Task<RunResult> RunAsync(ExecutionPlan plan, RunOptions options, IRunObserver? observer = null, CancellationToken ct = default)
    {
        observer ??= NullRunObserver.Instance;
        var runId = options.RunId ?? RunIds.New();
        var clock = Stopwatch.StartNew();
        var started = DateTimeOffset.UtcNow;
        await ledger.CreateRunAsync(new RunRecord(
            Id: runId, WorkflowName: plan.Definition.Name, WorkflowFile: options.WorkflowFile, WorkflowText: options.WorkflowText,
            Overrides: options.Overrides, BaseDirectory: options.BaseDirectory, AllowedRoots: options.AllowedRoots, Kind: options.Kind,
            OriginRunId: options.OriginRunId, Status: RunStatus.Running, StartedAt: started, EndedAt: null, Error: null), CancellationToken.None);
        await ledger.UpsertStepsAsync(plan.Steps.Select(step => step.Record(runId, StepStatus.Pending)).ToList(), CancellationToken.None);
        observer.RunStarted(runId, plan);

        var results = new Dictionary<string, StepResult>(StringComparer.Ordinal);
        var pending = plan.Steps.ToList();
        var running = new Dictionary<string, Task<StepResult>>(StringComparer.Ordinal);
        while (pending.Count > 0 || running.Count > 0)
        {
            foreach (var step in pending.ToList())
            {
                var (decision, error) = DagRules.Decide(step, d => results.TryGetValue(d, out var r) ? r.Status : null, ct.IsCancellationRequested);
                if (decision is StepDecision.Skip or StepDecision.Cancel)
                {
                    var status = decision == StepDecision.Cancel ? StepStatus.Cancelled : StepStatus.Skipped;
                    var skipped = new StepResult(step.Id, step.Descriptor.Type, status, null, TimeSpan.Zero, new Dictionary<string, OutputRecord>(), error);
                    results[step.Id] = skipped;
                    pending.Remove(step);
                    await _executor.Record(runId, step, skipped, null);
                    observer.StepFinished(skipped);
                    continue;
                }
                if (decision == StepDecision.Ready && running.Count < options.MaxParallel)
                {
                    pending.Remove(step);
                    Dictionary<string, StepResult> upstream;
                    lock (results)
                    {
                        upstream = new Dictionary<string, StepResult>(results, StringComparer.Ordinal);
                    }
                    running[step.Id] = Task.Run(() => _executor.ExecuteStepAsync(runId, step, upstream, options, observer, ct), CancellationToken.None);
                }
            }
            if (running.Count == 0)
            {
                continue;
            }
            var finished = await Task.WhenAny(running.Values);
            var result = await finished;
            running.Remove(result.StepId);
            lock (results)
            {
                results[result.StepId] = result;
            }
            observer.StepFinished(result);
        }

        var ordered = plan.Steps.Select(s => results[s.Id]).ToList();
        var runStatus = DagRules.Outcome(ordered, ct.IsCancellationRequested);
        var ended = DateTimeOffset.UtcNow;
        await ledger.UpdateRunAsync(runId, runStatus, ended, DagRules.Error(ordered), CancellationToken.None);
        var runResult = _publisher.Publish(runId, plan, options, ordered, runStatus, started, ended, clock.Elapsed);
        observer.RunFinished(runResult);
        return runResult;
    }

    /// <summary>Executes one step (see <see cref="StepExecutor.ExecuteStepAsync"/>); the Hangfire step job calls it too.</summary>
    public Task<StepResult> ExecuteStepAsync(string runId, PlannedStep step, IReadOnlyDictionary<string, StepResult> upstream, RunOptions options, IRunObserver observer, CancellationToken ct) =>
        _executor.ExecuteStepAsync(runId, step, upstream, options, observer, ct);

    /// <summary>Publishes a finished run (see <see cref="RunPublisher.Publish"/>); the Hangfire scheduler calls it too.</summary>
    public RunResult Publish(string runId, ExecutionPlan plan, RunOptions options, IReadOnlyList<StepResult> ordered, RunStatus status, DateTimeOffset started, DateTimeOffset ended, TimeSpan duration) =>
        _publisher.Publish(runId, plan, options, ordered, status, started, ended, duration);

    /// <summary>A step's result as the ledger recorded it (for schedulers that run steps in other processes).</summary>
    public static StepResult FromRecord(StepRecord r) => StepExecutor.FromRecord(r);
}
