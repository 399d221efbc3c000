using Hangfire;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Running;

namespace Pipelines.Host.Server;

/// <summary>
/// One step of one run, as a Hangfire job (only ids in its arguments). It is safe to run twice: a step already
/// final is only advanced, and a step's cache key is claimed before it is computed, so a re-delivered job (a worker
/// killed mid-step, its job visible again) computes it once and yields the same digests.
/// </summary>
public sealed class StepJob(RunScheduler scheduler, InProcessRunner runner, RunEvents events)
{
    [AutomaticRetry(Attempts = 3, DelaysInSeconds = [2, 5, 10])]
    public async Task RunAsync(string runId, string stepId, CancellationToken cancellationToken)
    {
        var ledger = scheduler.Ledger;
        var run = await ledger.GetRunAsync(runId, cancellationToken);
        if (run is null || run.Status != RunStatus.Running)
        {
            return;
        }
        var records = await ledger.GetStepsAsync(runId, cancellationToken);
        var self = records.FirstOrDefault(s => s.StepId == stepId);
        if (self is null || self.Status is not (StepStatus.Queued or StepStatus.Running))
        {
            await scheduler.AdvanceAsync(runId, cancellationToken);
            return;
        }
        var plan = scheduler.Compile(run);
        var step = plan.Steps.Single(s => s.Id == stepId);
        var upstream = records.Where(r => r.Status is StepStatus.Computed or StepStatus.Cached)
            .ToDictionary(r => r.StepId, InProcessRunner.FromRecord, StringComparer.Ordinal);

        // Cancelling the run (from any process) reaches the step through the ledger.
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var watch = Task.Run(async () =>
        {
            while (!cts.IsCancellationRequested)
            {
                await Task.Delay(1000, cts.Token).ConfigureAwait(false);
                if ((await ledger.GetRunAsync(runId, CancellationToken.None))?.Status == RunStatus.Cancelled)
                {
                    await cts.CancelAsync();
                }
            }
        }, CancellationToken.None);
        StepResult result;
        try
        {
            result = await runner.ExecuteStepAsync(runId, step, upstream, RunScheduler.Options(run), events.Observer(runId), cts.Token);
        }
        finally
        {
            await cts.CancelAsync();
            try
            {
                await watch;
            }
            catch (OperationCanceledException)
            {
            }
        }
        if (result.Status == StepStatus.Cancelled && cancellationToken.IsCancellationRequested)
        {
            // The worker is shutting down, not the run: put the step back and let Hangfire re-queue the job.
            await ledger.TransitionStepAsync(runId, stepId, [StepStatus.Cancelled], StepStatus.Queued, null, CancellationToken.None);
            cancellationToken.ThrowIfCancellationRequested();
        }
        await scheduler.AdvanceAsync(runId, CancellationToken.None);
    }
}
