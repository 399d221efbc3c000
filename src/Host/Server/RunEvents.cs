using System.Collections.Concurrent;
using System.Threading.Channels;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Planning;
using Pipelines.Engine.Running;

namespace Pipelines.Host.Server;

/// <summary>One live event of a run, for the server-sent event stream.</summary>
public sealed record RunEvent(string Type, string RunId, string? StepId, object Data);

/// <summary>
/// Live progress and logs of steps running in this process, fanned out to event-stream subscribers. Status changes
/// of steps run by other workers reach subscribers through the ledger (the stream polls it).
/// </summary>
public sealed class RunEvents
{
    private readonly ConcurrentDictionary<Guid, (string RunId, Channel<RunEvent> Channel)> _subscribers = new();

    // The latest progress of each running step in this process, replayed to a subscriber that attaches (or reattaches
    // after a reload) mid-step; removed when the step finishes, so it holds running steps only.
    private readonly ConcurrentDictionary<(string RunId, string StepId), RunEvent> _progress = new();

    public IRunObserver Observer(string runId) => new Forwarder(this, runId);

    public (ChannelReader<RunEvent> Reader, IDisposable Subscription) Subscribe(string runId)
    {
        var id = Guid.NewGuid();
        var channel = Channel.CreateBounded<RunEvent>(new BoundedChannelOptions(1000) { FullMode = BoundedChannelFullMode.DropOldest });
        foreach (var ((run, _), e) in _progress)
        {
            if (run == runId)
            {
                channel.Writer.TryWrite(e);
            }
        }
        _subscribers[id] = (runId, channel);
        return (channel.Reader, new Unsubscribe(() => _subscribers.TryRemove(id, out _)));
    }

    private void Publish(RunEvent e)
    {
        foreach (var (_, (runId, channel)) in _subscribers)
        {
            if (runId == e.RunId)
            {
                channel.Writer.TryWrite(e);
            }
        }
    }

    private sealed class Unsubscribe(Action action) : IDisposable
    {
        public void Dispose() => action();
    }

    private sealed class Forwarder(RunEvents events, string runId) : IRunObserver
    {
        public void StepStarted(string stepId) => events.Publish(new RunEvent("step-started", runId, stepId, new { }));

        public void StepProgress(string stepId, StepProgress progress)
        {
            var e = new RunEvent("progress", runId, stepId, new { fraction = progress.Fraction, message = progress.Message });
            events._progress[(runId, stepId)] = e;
            events.Publish(e);
        }

        public void StepFinished(StepResult result) => events._progress.TryRemove((runId, result.StepId), out _);

        public void RunFinished(RunResult result)
        {
            foreach (var key in events._progress.Keys.Where(k => k.RunId == runId))
            {
                events._progress.TryRemove(key, out _);
            }
        }

        public void StepLog(string stepId, string message) => events.Publish(new RunEvent("log", runId, stepId, new { message }));

        public void Warning(string message) => events.Publish(new RunEvent("warning", runId, null, new { message }));

        public void RunStarted(string id, ExecutionPlan plan)
        {
        }
    }
}
