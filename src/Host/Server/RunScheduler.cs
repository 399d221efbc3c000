using Hangfire;
using Hangfire.States;
using Pipelines.Engine.Definitions;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;
using Pipelines.Engine.Running;
using Pipelines.Engine.Validation;

namespace Pipelines.Host.Server;

/// <summary>What a client asks to run.</summary>
public sealed record Submission(string WorkflowText, string WorkflowFile, IReadOnlyDictionary<string, string> Overrides);

/// <summary>
/// The DAG scheduler for Hangfire (DESIGN: jobs carry only ids; the DAG state lives in the ledger). A run's steps
/// start Pending; a step whose upstream steps all succeeded moves to Queued (atomically, so exactly one process
/// enqueues it) and becomes a job on its resource's queue. A step whose upstream failed is Skipped. When every step
/// is final, the first process to flip the run's status writes its lock file and output links.
/// </summary>
public sealed class RunScheduler(IRunLedger ledger, InProcessRunner runner, WorkflowCompiler compiler, IBackgroundJobClient jobs, ServerConfig config)
{
    public IRunLedger Ledger => ledger;

    public PathPolicy Paths => new(config.ProjectRoot, config.AllowedRoots);

    /// <summary>Validates and compiles; throws <see cref="WorkflowInvalidException"/> with every diagnostic.</summary>
    public ExecutionPlan Compile(Submission s) => compiler.CompileText(s.WorkflowText, s.WorkflowFile, s.Overrides, Paths);

    public ExecutionPlan Compile(RunRecord run) =>
        compiler.CompileText(run.WorkflowText, run.WorkflowFile, run.Overrides, new PathPolicy(run.BaseDirectory, run.AllowedRoots));

    public static RunOptions Options(RunRecord run) => RunOptions.ForRecordedRun(run);

    public async Task<string> SubmitAsync(Submission s, RunKind kind = RunKind.Run, string? origin = null, CancellationToken ct = default)
    {
        var plan = Compile(s);
        var runId = RunIds.New();
        await ledger.CreateRunAsync(new RunRecord(
            Id: runId, WorkflowName: plan.Definition.Name, WorkflowFile: s.WorkflowFile, WorkflowText: s.WorkflowText, Overrides: s.Overrides,
            BaseDirectory: config.ProjectRoot, AllowedRoots: config.AllowedRoots, Kind: kind, OriginRunId: origin,
            Status: RunStatus.Running, StartedAt: DateTimeOffset.UtcNow, EndedAt: null, Error: null), ct);
        await ledger.UpsertStepsAsync(plan.Steps.Select(step => step.Record(runId, StepStatus.Pending)).ToList(), ct);
        await AdvanceAsync(runId, ct);
        return runId;
    }

    /// <summary>Enqueues ready steps, skips blocked ones, and finishes the run when every step is final.</summary>
    public async Task AdvanceAsync(string runId, CancellationToken ct = default)
    {
        var run = await ledger.GetRunAsync(runId, ct);
        if (run is null || run.Status != RunStatus.Running)
        {
            return;
        }
        var plan = Compile(run);
        var status = (await ledger.GetStepsAsync(runId, ct)).ToDictionary(s => s.StepId, s => s.Status, StringComparer.Ordinal);
        foreach (var step in plan.Steps)
        {
            if (status[step.Id] != StepStatus.Pending)
            {
                continue;
            }
            var (decision, error) = DagRules.Decide(step, d => DagRules.IsFinal(status[d]) ? status[d] : null, runCancelled: false);
            if (decision is StepDecision.Skip or StepDecision.Cancel)
            {
                var to = decision == StepDecision.Cancel ? StepStatus.Cancelled : StepStatus.Skipped;
                if (await ledger.TransitionStepAsync(runId, step.Id, [StepStatus.Pending], to, error, ct))
                {
                    status[step.Id] = to;
                }
                continue;
            }
            if (decision == StepDecision.Ready
                && await ledger.TransitionStepAsync(runId, step.Id, [StepStatus.Pending], StepStatus.Queued, null, ct))
            {
                status[step.Id] = StepStatus.Queued;
                var stepId = step.Id;
                jobs.Create(Hangfire.Common.Job.FromExpression<StepJob>(j => j.RunAsync(runId, stepId, CancellationToken.None)), new EnqueuedState(step.Descriptor.Queue));
            }
        }
        if (status.Values.All(DagRules.IsFinal))
        {
            await FinishAsync(run, plan, ct);
        }
    }

    private async Task FinishAsync(RunRecord run, ExecutionPlan plan, CancellationToken ct)
    {
        var records = (await ledger.GetStepsAsync(run.Id, ct)).ToDictionary(s => s.StepId, StringComparer.Ordinal);
        var ordered = plan.Steps.Select(s => InProcessRunner.FromRecord(records[s.Id])).ToList();
        var outcome = DagRules.Outcome(ordered, cancelled: false);
        var ended = DateTimeOffset.UtcNow;
        if (await ledger.TransitionRunAsync(run.Id, RunStatus.Running, outcome, ended, DagRules.Error(ordered), ct))
        {
            runner.Publish(run.Id, plan, Options(run), ordered, outcome, run.StartedAt, ended, ended - run.StartedAt);
        }
    }

    /// <summary>Cancels a running run: steps not started are cancelled; running steps see it within a second.</summary>
    public async Task<bool> CancelAsync(string runId, CancellationToken ct = default)
    {
        if (!await ledger.TransitionRunAsync(runId, RunStatus.Running, RunStatus.Cancelled, DateTimeOffset.UtcNow, "cancelled", ct))
        {
            return false;
        }
        foreach (var step in await ledger.GetStepsAsync(runId, ct))
        {
            await ledger.TransitionStepAsync(runId, step.StepId, [StepStatus.Pending, StepStatus.Queued], StepStatus.Cancelled, DagRules.CancelledBeforeStart, ct);
        }
        return true;
    }

    /// <summary>How long a resume waits for the steps of a cancelled run to stop before it takes them over.</summary>
    public static readonly TimeSpan StoppingGrace = TimeSpan.FromSeconds(60);

    /// <summary>Re-opens a failed or cancelled run under its id: finished steps are kept, the rest run again.</summary>
    public async Task<bool> ResumeAsync(string runId, CancellationToken ct = default)
    {
        var run = await ledger.GetRunAsync(runId, ct);
        if (run is null || run.Status is RunStatus.Running or RunStatus.Succeeded)
        {
            return false;
        }
        // A cancelled step's job notices within about a second and records it. Until then it still computes, and if
        // the step were re-queued now, its late "cancelled" would land on the resumed attempt and end the run again.
        // So wait for running steps to settle; one that never does (its process died) is taken over after a minute.
        var settle = System.Diagnostics.Stopwatch.StartNew();
        while (settle.Elapsed < StoppingGrace && (await ledger.GetStepsAsync(runId, ct)).Any(s => s.Status == StepStatus.Running))
        {
            await Task.Delay(250, ct);
        }
        foreach (var step in await ledger.GetStepsAsync(runId, ct))
        {
            if (step.Status is StepStatus.Failed or StepStatus.Skipped or StepStatus.Cancelled or StepStatus.Running or StepStatus.Queued)
            {
                await ledger.UpsertStepAsync(step with { Status = StepStatus.Pending, Error = null, Outputs = null, StartedAt = null, EndedAt = null, DurationMs = null }, ct);
            }
        }
        if (!await ledger.TransitionRunAsync(runId, run.Status, RunStatus.Running, null, null, ct))
        {
            return false;
        }
        await AdvanceAsync(runId, ct);
        return true;
    }
}
