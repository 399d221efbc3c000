using System.Text.Json;
using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Engine.Activities;
using Pipelines.Models.Training;

namespace Pipelines.Activities.Model;

/// <summary>The toy tasks, as workflow values.</summary>
public enum ToyTask { Ioi, GreaterThan, RefusalChat, Concept, Belief, Vignette }

/// <summary>Trains a small transformer on a toy task with a known solution; saves HF checkpoints.</summary>
[Activity("model.train-toy", Version = 6, Category = "Model", Resources = ["gpu"], Summary = "Train a small GPT-2-style model on a toy task (IOI, greater-than, a refusal-world chat model or a concept-world LM); deterministic under a seed")]
[Output("model", ArtifactKinds.Model, Help = "The trained model, a HF checkpoint with a word-level tokenizer", MediaType = "inode/directory", FileName = "model", IsDirectory = true)]
[Output("checkpoints", ArtifactKinds.Checkpoints, Help = "Intermediate checkpoints step-NNNNNN/ (empty unless checkpointEvery > 0)", MediaType = "inode/directory", FileName = "checkpoints", IsDirectory = true)]
[Output("metrics", ArtifactKinds.Json, Help = "Held-out accuracy, task metric and final loss", MediaType = "application/json", FileName = "metrics.json")]
public sealed class TrainToyActivity : Activity<TrainToyActivity.Input>
{
    public sealed record Input
    {
        [Input("The task: ioi (indirect object identification), greater-than, refusal-chat (a chat model of a crawl.toy-world world) concept (an LM of an erasure.concept-world world that answers its MCQs), belief (belief tracking, causal.toy-task) or vignette (clinical vignettes with a planted gender attribute)")]
        public ToyTask Task { get; init; } = ToyTask.Ioi;

        [Input("refusal-chat: the world to play (from crawl.toy-world); concept: the world to learn (erasure.concept-world's world)", Kind = ArtifactKinds.Json)]
        public Artifact? World { get; init; }

        [Input("concept: domains left out of the training text (a model that never learned them: the exact-unlearning reference for erasure.probe)")]
        public IReadOnlyList<string> ExcludeDomains { get; init; } = [];

        [Input("Optimizer steps", Minimum = 1, Maximum = 1_000_000)]
        public int Steps { get; init; } = 800;

        [Input("Examples per step", Minimum = 1, Maximum = 4096)]
        public int BatchSize { get; init; } = 64;

        [Input("AdamW peak learning rate (after a 50-step linear warm-up; cosine decay to a tenth of it by the last step)", Minimum = 0)]
        public double LearningRate { get; init; } = 4e-3;

        [Input("Seed for initialisation and data")]
        public long Seed { get; init; }

        [Input("Save an intermediate checkpoint every N steps (0: none)", Minimum = 0)]
        public int CheckpointEvery { get; init; }

        [Input("Width of the residual stream", Minimum = 8, Maximum = 4096)]
        public int DModel { get; init; } = 64;

        [Input("Number of layers", Minimum = 1, Maximum = 48)]
        public int NLayers { get; init; } = 2;

        [Input("Attention heads per layer", Minimum = 1, Maximum = 64)]
        public int NHeads { get; init; } = 4;

        [Input("MLP width", Minimum = 1, Maximum = 16384)]
        public int DMlp { get; init; } = 256;
    }

    /// <summary>Heads must divide the width.</summary>
    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.NHeads).Must((i, h) => i.DModel % h == 0).WithMessage("expected nHeads to divide dModel");
            RuleFor(i => i.LearningRate).GreaterThan(0).LessThan(1).WithMessage("expected a learning rate in (0, 1)");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (input.Task == ToyTask.RefusalChat)
        {
            return RefusalChat.Train(input, context);
        }
        if (input.Task == ToyTask.Concept)
        {
            return ConceptModel.Train(input, context);
        }
        if (input.Task is ToyTask.Belief or ToyTask.Vignette)
        {
            return CausalToyModel.Train(input, context);
        }
        var options = new ToyTrainingOptions
        {
            Task = input.Task == ToyTask.Ioi ? "ioi" : "greater-than",
            Steps = input.Steps, BatchSize = input.BatchSize, LearningRate = input.LearningRate, Seed = input.Seed,
            CheckpointEvery = input.CheckpointEvery, DModel = input.DModel, NLayers = input.NLayers, NHeads = input.NHeads, DMlp = input.DMlp,
        };
        var result = ToyTrainer.Train(options, context.OutputDirectory("model"), context.OutputDirectory("checkpoints"),
            (step, loss) => context.Report((double)step / input.Steps, $"step {step}, loss {loss:F4}"), context.CancellationToken,
            resumeDirectory: context.ResumeDirectory); // killed mid-way, the step continues from its last save (every 100 steps)
        var metrics = new JsonObject
        {
            ["task"] = options.Task,
            ["steps"] = input.Steps,
            ["heldOutExamples"] = result.Score.Examples,
            ["accuracy"] = JsonNumbers.Round(result.Score.Accuracy),
            [result.Score.MetricName.Replace(' ', '_')] = JsonNumbers.Round(result.Score.Metric),
            ["finalLoss"] = JsonNumbers.Round(result.FinalLoss),
            ["checkpoints"] = new JsonArray(result.Checkpoints.Select(c => (JsonNode?)$"step-{c.Step:D6}").ToArray()),
        };
        File.WriteAllText(context.OutputFile("metrics"), metrics.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"{options.Task}: held-out accuracy {result.Score.Accuracy:P1}, {result.Score.MetricName} {result.Score.Metric:F3}");
        return Task.CompletedTask;
    }
}
