using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Crawl;
using Pipelines.Engine.Activities;
using Pipelines.Models.Training;

namespace Pipelines.Activities.Model;

/// <summary>model.train-toy's refusal-chat task: a chat model that plays a toy refusal world (see <see cref="ToyWorld"/>).</summary>
internal static class RefusalChat
{
    /// <summary>The chat trainer's settings from model.train-toy's inputs (also used by the concept task).</summary>
    public static ChatTrainingOptions ChatOptions(TrainToyActivity.Input input) => new()
    {
        Steps = input.Steps, BatchSize = input.BatchSize, LearningRate = input.LearningRate, Seed = input.Seed,
        DModel = input.DModel, NLayers = input.NLayers, NHeads = input.NHeads, DMlp = input.DMlp,
    };

    public static Task Train(TrainToyActivity.Input input, ActivityContext context)
    {
        var world = ToyWorld.Read((input.World ?? throw new ActivityException("inputs.world: the refusal-chat task needs a world (connect crawl.toy-world)")).Path);
        var tokenizer = world.Tokenizer();
        var options = ChatOptions(input);
        var loss = ChatTrainer.Train(options, tokenizer, ToyWorld.SpecialTokens, step => world.Batch(step, input.BatchSize, input.Seed),
            context.OutputDirectory("model"), (step, l) => context.Report((double)step / input.Steps, $"step {step}, loss {l:F4}"),
            context.CancellationToken, context.ResumeDirectory);
        Directory.CreateDirectory(context.OutputDirectory("checkpoints"));
        var metrics = new JsonObject { ["task"] = "refusal-chat", ["steps"] = input.Steps, ["finalLoss"] = JsonNumbers.Round(loss), ["vocabulary"] = tokenizer.Vocabulary.Count };
        File.WriteAllText(context.OutputFile("metrics"), metrics.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"refusal-chat: final loss {loss:F4}");
        return Task.CompletedTask;
    }
}
