using FluentValidation;
using Pipelines.Models.Common;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Data;

/// <summary>Splits a dataset into train and test parts, seeded.</summary>
[Activity("data.split", Version = 1, Category = "Data", Summary = "Split a dataset into train and test parts")]
[Output("train", ArtifactKinds.Dataset, Help = "The training part", MediaType = "application/x-ndjson", FileName = "train.jsonl")]
[Output("test", ArtifactKinds.Dataset, Help = "The held-out part", MediaType = "application/x-ndjson", FileName = "test.jsonl")]
public sealed class SplitActivity : Activity<SplitActivity.Input>
{
    public sealed record Input
    {
        [Input("The dataset to split", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("Fraction of examples that go to train", Minimum = 0, Maximum = 1)]
        public double TrainFraction { get; init; } = 0.8;

        [Input("Shuffle before splitting (seeded); false splits in file order")]
        public bool Shuffle { get; init; } = true;

        [Input("Random seed for the shuffle")]
        public long Seed { get; init; }
    }

    /// <summary>Both parts must be able to hold examples.</summary>
    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.TrainFraction).ExclusiveBetween(0.0, 1.0)
                .WithMessage("expected a fraction strictly between 0 and 1, so both parts can hold examples");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var rows = Jsonl.Read(input.Dataset.Path, "dataset", context);
        if (rows.Count < 2)
        {
            throw new ActivityException($"cannot split {rows.Count} example(s) into two non-empty parts");
        }
        var order = Enumerable.Range(0, rows.Count).ToList();
        if (input.Shuffle)
        {
            new SeededRandom(input.Seed).Shuffle(order);
        }
        var trainCount = Math.Clamp((int)Math.Round(rows.Count * input.TrainFraction), 1, rows.Count - 1);
        Jsonl.Write(context.OutputFile("train"), order.Take(trainCount).Select(i => rows[i]));
        Jsonl.Write(context.OutputFile("test"), order.Skip(trainCount).Select(i => rows[i]));
        context.Report(1, $"{trainCount:N0} train, {rows.Count - trainCount:N0} test");
        return Task.CompletedTask;
    }
}
