using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Data;

/// <summary>Loads a JSONL file (one JSON object per line) as a Dataset artifact, checking every line.</summary>
[Activity("data.load-jsonl", Version = 1, Category = "Data", Summary = "Load a JSONL file (one JSON object per line) as a dataset")]
[Output("dataset", ArtifactKinds.Dataset, Help = "The examples, normalized to compact JSONL", MediaType = "application/x-ndjson", FileName = "dataset.jsonl")]
public sealed class LoadJsonlActivity : Activity<LoadJsonlActivity.Input>
{
    public sealed record Input
    {
        [Input("The JSONL file to read (relative to the working directory)", IsPath = true, PathKind = PathKind.File)]
        public required string Path { get; init; }

        [Input("Read at most this many examples; 0 reads all", Minimum = 0)]
        public int Limit { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var rows = Jsonl.Read(input.Path, input.Path, context, input.Limit);
        if (rows.Count == 0)
        {
            throw new ActivityException($"{input.Path}: the file holds no examples");
        }
        Jsonl.Write(context.OutputFile("dataset"), rows);
        context.Report(1, $"{rows.Count:N0} examples");
        context.Log($"loaded {rows.Count} examples from {input.Path}");
        return Task.CompletedTask;
    }
}
