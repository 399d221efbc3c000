using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Engine.Activities;
using Pipelines.Models.Training;

namespace Pipelines.Activities.Model;

/// <summary>Task accuracy and logit difference of a model on a dataset of prompts with answers.</summary>
[Activity("model.evaluate", Version = 1, Category = "Model", Summary = "Task accuracy and logit (or probability) difference of a model on a dataset")]
[Output("metrics", ArtifactKinds.Json, Help = "Accuracy, mean metric and the number of examples", MediaType = "application/json", FileName = "metrics.json")]
public sealed class EvaluateModelActivity : Activity<EvaluateModelActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("Rows with \"clean\" and either \"correct\"/\"incorrect\" answer words (IOI-style) or a two-digit \"label\" (greater-than)", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("Examples per forward pass", Minimum = 1, Maximum = 4096)]
        public int BatchSize { get; init; } = 128;
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var rows = Jsonl.Read(input.Dataset.Path, "dataset", context);
        var examples = rows.Select((r, i) => ToExample(r, i)).ToList();
        using var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken);
        var (model, tokenizer) = lease;
        {
            foreach (var (e, i) in examples.Select((e, i) => (e, i)))
            {
                foreach (var word in new[] { e.Correct, e.Incorrect }.OfType<string>())
                {
                    if (tokenizer.Encode(word).Count != 1)
                    {
                        throw new ActivityException($"dataset, row {i + 1}: the answer \"{word}\" is not a single token for this model's tokenizer");
                    }
                }
            }
            context.Report(0.1, $"{examples.Count} examples");
            var score = ToyTrainer.Evaluate(model, tokenizer, examples, input.BatchSize);
            var metrics = new JsonObject
            {
                ["task"] = score.Task,
                ["examples"] = score.Examples,
                ["accuracy"] = JsonNumbers.Round(score.Accuracy),
                ["metric"] = score.MetricName,
                ["value"] = JsonNumbers.Round(score.Metric),
            };
            File.WriteAllText(context.OutputFile("metrics"), metrics.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            context.Log($"accuracy {score.Accuracy:P1}, {score.MetricName} {score.Metric:F3} on {score.Examples} examples");
        }
        return Task.CompletedTask;
    }

    private static ToyExample ToExample(JsonObject row, int index)
    {
        string Field(string name) => row[name] is JsonValue v && v.TryGetValue<string>(out var s) ? s
            : throw new ActivityException($"dataset, row {index + 1}: expected a string field \"{name}\"");
        var clean = Field("clean");
        if (row["label"] is JsonValue label)
        {
            var yy = label.TryGetValue<int>(out var i) ? i : int.TryParse(label.ToString(), out var j) ? j : throw new ActivityException($"dataset, row {index + 1}: \"label\" must be a two-digit year");
            return new ToyExample("greater-than", clean, row["corrupted"]?.ToString() ?? clean, ToyTasks.Year(Math.Min(99, yy + 1)), null, yy, 0);
        }
        return new ToyExample("ioi", clean, row["corrupted"]?.ToString() ?? clean, Field("correct"), Field("incorrect"), null, 0);
    }
}
