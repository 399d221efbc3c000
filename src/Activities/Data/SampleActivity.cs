using FluentValidation;
using Pipelines.Models.Common;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Data;

/// <summary>Draws a seeded random sample of a dataset.</summary>
[Activity("data.sample", Version = 1, Category = "Data", Summary = "Draw a seeded random sample of examples")]
[Output("dataset", ArtifactKinds.Dataset, Help = "The sampled examples", MediaType = "application/x-ndjson", FileName = "dataset.jsonl")]
public sealed class SampleActivity : Activity<SampleActivity.Input>
{
    public sealed record Input
    {
        [Input("The dataset to sample from", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("How many examples to draw (all of them if the dataset is smaller and replacement is off)", Minimum = 1)]
        public int Count { get; init; } = 100;

        [Input("Random seed; the same seed draws the same examples")]
        public long Seed { get; init; }

        [Input("Draw with replacement (bootstrap)")]
        public bool Replace { get; init; }

        [Input("Keep the dataset's order (true) or the random draw order (false)")]
        public bool KeepOrder { get; init; } = true;
    }

    /// <summary>Checks the inputs before anything runs.</summary>
    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Count).InclusiveBetween(1, 100_000_000).WithMessage("expected a count between 1 and 100,000,000");
            RuleFor(i => i.KeepOrder).Equal(false).When(i => i.Replace)
                .WithMessage("keepOrder must be false when replace is true (a bootstrap sample has no dataset order)");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var rows = Jsonl.Read(input.Dataset.Path, "dataset", context);
        var random = new SeededRandom(input.Seed);
        List<int> picked;
        if (input.Replace)
        {
            picked = Enumerable.Range(0, input.Count).Select(_ => random.Next(rows.Count)).ToList();
        }
        else
        {
            var indices = Enumerable.Range(0, rows.Count).ToList();
            random.Shuffle(indices);
            picked = indices.Take(Math.Min(input.Count, rows.Count)).ToList();
            if (input.KeepOrder)
            {
                picked.Sort();
            }
            if (input.Count > rows.Count)
            {
                context.Log($"asked for {input.Count} examples but the dataset has {rows.Count}; kept all of them");
            }
        }
        Jsonl.Write(context.OutputFile("dataset"), picked.Select(i => rows[i]));
        context.Report(1, $"{picked.Count:N0} of {rows.Count:N0} examples");
        return Task.CompletedTask;
    }
}
