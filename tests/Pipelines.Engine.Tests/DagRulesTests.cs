using Pipelines.Engine.Ledger;
using Pipelines.Engine.Running;

namespace Pipelines.Engine.Tests;

/// <summary>The one set of DAG rules both schedulers call, on every combination of upstream states.</summary>
public sealed class DagRulesTests : IDisposable
{
    private readonly Workspace _ws = new();

    public void Dispose() => _ws.Dispose();

    [Fact]
    public void ReadySkipCancelAndWaitFollowTheUpstreamStates()
    {
        _ws.WriteDataset("data.jsonl", 10);
        var plan = _ws.Compile(Workflows.Chain);
        var sample = plan.Steps.First(s => s.DependsOn.Count == 1);
        var upstream = sample.DependsOn[0];
        StepDecision Decide(StepStatus? s, bool cancelled = false) => DagRules.Decide(sample, d => d == upstream ? s : null, cancelled).Decision;
        Assert.Equal(StepDecision.Wait, Decide(null));
        Assert.Equal(StepDecision.Ready, Decide(StepStatus.Computed));
        Assert.Equal(StepDecision.Ready, Decide(StepStatus.Cached));
        Assert.Equal(StepDecision.Skip, Decide(StepStatus.Failed));
        Assert.Equal(StepDecision.Skip, Decide(StepStatus.Skipped));
        Assert.Equal(StepDecision.Cancel, Decide(StepStatus.Cancelled));
        Assert.Equal(StepDecision.Cancel, Decide(StepStatus.Computed, cancelled: true));
        Assert.Equal($"skipped: step \"{upstream}\" did not succeed", DagRules.Decide(sample, _ => StepStatus.Failed, false).Error);
        Assert.Equal(StepDecision.Ready, DagRules.Decide(plan.Steps.First(s => s.DependsOn.Count == 0), _ => null, false).Decision);
        Assert.True(DagRules.IsFinal(StepStatus.Skipped));
        Assert.False(DagRules.IsFinal(StepStatus.Queued));
    }
}
