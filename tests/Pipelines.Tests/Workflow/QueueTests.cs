namespace Pipelines.Tests.Workflow;

public sealed class QueueTests : IDisposable
{
    private readonly Workspace _ws = new();

    [Fact]
    public void ModelHeavyActivitiesGoToTheGpuQueueAndTheRestToDefault()
    {
        var queues = _ws.Registry.All.ToDictionary(a => a.Descriptor.Type, a => a.Descriptor.Queue);
        foreach (var heavy in new[] { "model.train-toy", "circuits.attribute", "circuits.faithfulness" })
        {
            Assert.Equal("gpu", queues[heavy]);
        }
        Assert.Equal("default", queues["data.toy-task"]);
        Assert.Equal("default", queues["report.json"]);
    }

    public void Dispose() => _ws.Dispose();
}
