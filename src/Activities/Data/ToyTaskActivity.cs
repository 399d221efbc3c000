using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Training;

namespace Pipelines.Activities.Data;

/// <summary>Generates counterfactual pairs of a toy task: clean and corrupted prompts with answers.</summary>
[Activity("data.toy-task", Version = 1, Category = "Data", Summary = "Generate counterfactual pairs of a toy task (IOI with ABC corruption, or greater-than)")]
[Output("dataset", ArtifactKinds.Dataset, Help = "Rows: task, clean, corrupted, correct, incorrect (IOI) or label (greater-than), template", MediaType = "application/x-ndjson", FileName = "dataset.jsonl")]
public sealed class ToyTaskActivity : Activity<ToyTaskActivity.Input>
{
    public sealed record Input
    {
        [Input("The task: ioi or greater-than")]
        public ToyTask Task { get; init; } = ToyTask.Ioi;

        [Input("How many pairs", Minimum = 1, Maximum = 10_000_000)]
        public int Count { get; init; } = 200;

        [Input("Seed; the training data of model.train-toy uses other seeds")]
        public long Seed { get; init; } = 12345;
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var task = input.Task == ToyTask.Ioi ? "ioi" : "greater-than";
        Jsonl.Write(context.OutputFile("dataset"), ToyTasks.Generate(task, input.Count, input.Seed).Select(e => e.ToJson()));
        context.Report(1, $"{input.Count} {task} pairs");
        return Task.CompletedTask;
    }
}
