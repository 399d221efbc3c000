using System.Text.Json;
using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Engine.Activities;

namespace Pipelines.Engine.Tests;

// Small activities over JSONL lines: enough for the engine's rules (keys, caching, failure, resume, parallelism,
// lineage) without the product's activities, TorchSharp or the Host. Their ports mirror data.load-jsonl, data.sample,
// data.split and report.json, so the workflows read like the product's.

internal static class Lines
{
    public static List<string> Read(string path) => File.ReadAllLines(path).Where(l => l.Length > 0).ToList();

    public static void Write(string path, IEnumerable<string> lines) => File.WriteAllText(path, string.Concat(lines.Select(l => l + "\n")));

    /// <summary>A Fisher–Yates shuffle under a seed (System.Random with a seed is stable across runs and machines).</summary>
    public static List<T> Shuffled<T>(IEnumerable<T> items, long seed)
    {
        var list = items.ToList();
        var random = new Random(unchecked((int)seed ^ (int)(seed >> 32)));
        for (var i = list.Count - 1; i > 0; i--)
        {
            var j = random.Next(i + 1);
            (list[i], list[j]) = (list[j], list[i]);
        }
        return list;
    }
}

[Activity("fx.load-jsonl", Version = 1, Category = "Test", Summary = "Read a JSONL file, checking every line (tests only)")]
[Output("dataset", ArtifactKinds.Dataset, MediaType = "application/x-ndjson", FileName = "dataset.jsonl")]
public sealed class FxLoadActivity : Activity<FxLoadActivity.Input>
{
    public sealed record Input
    {
        [Input("The JSONL file", IsPath = true, PathKind = PathKind.File)]
        public required string Path { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var lines = Lines.Read(input.Path);
        for (var i = 0; i < lines.Count; i++)
        {
            try
            {
                JsonNode.Parse(lines[i]);
            }
            catch (JsonException)
            {
                throw new ActivityException($"{System.IO.Path.GetFileName(input.Path)}, line {i + 1}: invalid JSON");
            }
        }
        Lines.Write(context.OutputFile("dataset"), lines);
        return Task.CompletedTask;
    }
}

[Activity("fx.sample", Version = 1, Category = "Test", Summary = "A seeded sample of lines (tests only)")]
[Output("dataset", ArtifactKinds.Dataset, MediaType = "application/x-ndjson", FileName = "dataset.jsonl")]
public sealed class FxSampleActivity : Activity<FxSampleActivity.Input>
{
    public sealed record Input
    {
        [Input("Lines to sample from", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("How many", Minimum = 1)]
        public int Count { get; init; } = 100;

        [Input("Seed")]
        public long Seed { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var lines = Lines.Read(input.Dataset.Path);
        for (var i = 0; i < lines.Count; i += 1000)
        {
            context.CancellationToken.ThrowIfCancellationRequested();
        }
        Lines.Write(context.OutputFile("dataset"), Lines.Shuffled(lines, input.Seed).Take(input.Count));
        return Task.CompletedTask;
    }
}

[Activity("fx.split", Version = 1, Category = "Test", Summary = "Split lines in two (tests only)")]
[Output("train", ArtifactKinds.Dataset, MediaType = "application/x-ndjson", FileName = "train.jsonl")]
[Output("test", ArtifactKinds.Dataset, MediaType = "application/x-ndjson", FileName = "test.jsonl")]
public sealed class FxSplitActivity : Activity<FxSplitActivity.Input>
{
    public sealed record Input
    {
        [Input("Lines to split", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("Fraction to the first part", Minimum = 0, Maximum = 1)]
        public double TrainFraction { get; init; } = 0.8;

        [Input("Shuffle first")]
        public bool Shuffle { get; init; } = true;

        [Input("Seed")]
        public long Seed { get; init; }
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator() => RuleFor(i => i.TrainFraction).ExclusiveBetween(0.0, 1.0).WithMessage("expected a fraction strictly between 0 and 1");
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var lines = Lines.Read(input.Dataset.Path);
        var order = input.Shuffle ? Lines.Shuffled(lines, input.Seed) : lines;
        var n = Math.Clamp((int)Math.Round(lines.Count * input.TrainFraction), 1, Math.Max(1, lines.Count - 1));
        Lines.Write(context.OutputFile("train"), order.Take(n));
        Lines.Write(context.OutputFile("test"), order.Skip(n));
        return Task.CompletedTask;
    }
}

[Activity("fx.report", Version = 1, Category = "Test", Summary = "Count the lines of datasets (tests only)")]
[Output("report", ArtifactKinds.Json, MediaType = "application/json", FileName = "report.json")]
public sealed class FxReportActivity : Activity<FxReportActivity.Input>
{
    public sealed record Input
    {
        [Input("Datasets to count", Kind = ArtifactKinds.Dataset)]
        public required IReadOnlyList<Artifact> Datasets { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var counts = new JsonArray(input.Datasets.Select(d => (JsonNode)Lines.Read(d.Path).Count).ToArray());
        var first = new JsonArray(input.Datasets.Select(d => (JsonNode?)Lines.Read(d.Path).FirstOrDefault()).ToArray());
        File.WriteAllText(context.OutputFile("report"), new JsonObject { ["counts"] = counts, ["first"] = first }.ToJsonString());
        return Task.CompletedTask;
    }
}

/// <summary>
/// Counts to <c>steps</c>, saving its count in the step's durable resume directory after each one; fails once at
/// <c>failAt</c> (when the directory holds no note that it already failed), so a rerun must continue from the save.
/// </summary>
[Activity("fx.count", Version = 1, Category = "Test", Summary = "Count with saves in the resume directory (tests only)")]
[Output("result", ArtifactKinds.Json, MediaType = "application/json", FileName = "result.json")]
public sealed class FxCountActivity : Activity<FxCountActivity.Input>
{
    public sealed record Input
    {
        [Input("Steps to count", Minimum = 1)]
        public int Steps { get; init; } = 10;

        [Input("Fail once after this step (0: never)", Minimum = 0)]
        public int FailAt { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var save = Path.Combine(context.ResumeDirectory, "count.txt");
        var failedBefore = Path.Combine(context.ResumeDirectory, "failed-once");
        var start = File.Exists(save) ? int.Parse(File.ReadAllText(save), System.Globalization.CultureInfo.InvariantCulture) : 0;
        var executed = new List<int>();
        for (var step = start + 1; step <= input.Steps; step++)
        {
            executed.Add(step);
            File.WriteAllText(save, step.ToString(System.Globalization.CultureInfo.InvariantCulture));
            if (step == input.FailAt && !File.Exists(failedBefore))
            {
                File.WriteAllText(failedBefore, "");
                throw new ActivityException($"failed on purpose after step {step}");
            }
        }
        File.WriteAllText(context.OutputFile("result"), new JsonObject
        {
            ["resumedFrom"] = start,
            ["executed"] = new JsonArray(executed.Select(s => (JsonNode)s).ToArray()),
        }.ToJsonString());
        return Task.CompletedTask;
    }
}
