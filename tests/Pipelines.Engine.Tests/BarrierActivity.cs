using Pipelines.Engine.Activities;

namespace Pipelines.Engine.Tests;

/// <summary>
/// Test-only activity: waits until <c>parties</c> steps of the same group are running at once. It finishes only if
/// the runner really runs them concurrently, so it proves parallelism without timing assumptions.
/// </summary>
[Activity("test.barrier", Version = 1, Category = "Test", Summary = "Wait for the other steps of a group (tests only)")]
[Output("out", ArtifactKinds.Json, MediaType = "application/json", FileName = "out.json")]
public sealed class BarrierActivity : Activity<BarrierActivity.Input>
{
    private static readonly Dictionary<string, Barrier> Barriers = new();

    public sealed record Input
    {
        [Input("Barrier group")]
        public string Group { get; init; } = "g";

        [Input("How many steps must meet", Minimum = 1)]
        public int Parties { get; init; } = 2;

        [Input("Distinguishes otherwise equal steps")]
        public int Tag { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        Barrier barrier;
        lock (Barriers)
        {
            if (!Barriers.TryGetValue(input.Group, out barrier!))
            {
                Barriers[input.Group] = barrier = new Barrier(input.Parties);
            }
        }
        if (!barrier.SignalAndWait(TimeSpan.FromSeconds(20), context.CancellationToken))
        {
            throw new ActivityException($"no other step of group {input.Group} ran at the same time");
        }
        File.WriteAllText(context.OutputFile("out"), $"{{\"tag\": {input.Tag}}}");
        return Task.CompletedTask;
    }
}
