using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Causal;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Training;

namespace Pipelines.Activities.Model;

/// <summary>model.train-toy's causal tasks: a small LM of the belief-tracking or vignette world; held-out accuracy in the metrics.</summary>
internal static class CausalToyModel
{
    public static Task Train(TrainToyActivity.Input input, ActivityContext context)
    {
        var belief = input.Task == ToyTask.Belief;
        var tokenizer = belief ? BeliefWorld.Tokenizer() : VignetteWorld.Tokenizer();
        Func<int, IReadOnlyList<ChatExample>> batch = belief ? step => BeliefWorld.Batch(step, input.BatchSize, input.Seed) : step => VignetteWorld.Batch(step, input.BatchSize, input.Seed);
        var options = RefusalChat.ChatOptions(input) with { NCtx = 64, Architecture = "llama" }; // rotary positions: relative offsets make the lookups learnable in minutes
        var output = context.OutputDirectory("model");
        var loss = ChatTrainer.Train(options, tokenizer, ToyWorldTokens.Specials, batch, output,
            (step, l) => context.Report((double)step / input.Steps, $"step {step}, loss {l:F4}"), context.CancellationToken, context.ResumeDirectory);
        Directory.CreateDirectory(context.OutputDirectory("checkpoints"));
        using var model = Checkpoint.Load(output);
        var collector = new ActivationCollector(model, tokenizer);
        var runner = new InterchangeRunner(model, collector, PatchHook.ResidPost);
        // Held out: batches from a seed training never used; belief is deterministic, vignettes are scored against their planted probabilities.
        var heldOut = Enumerable.Range(0, 8).SelectMany(k => belief ? BeliefWorld.Questions(k, 64, input.Seed + 1_000_003) : VignetteWorld.Batch(k, 64, input.Seed + 1_000_003)).ToList();
        var answers = runner.Plain(heldOut.Select(e => collector.Ids(e.Prompt)).ToList(), heldOut.Select(e => tokenizer.Encode(e.Completion).Count).ToList());
        var accuracy = heldOut.Zip(answers).Count(p => InterchangeRunner.Check(p.Second, p.First.Completion, false)) / (double)heldOut.Count;
        double Share(Func<ChatExample, bool> which)
        {
            var subset = heldOut.Zip(answers).Where(p => which(p.First)).ToList();
            return subset.Count == 0 ? double.NaN : subset.Count(p => InterchangeRunner.Check(p.Second, p.First.Completion, false)) / (double)subset.Count;
        }
        var metrics = new JsonObject
        {
            ["task"] = belief ? "belief" : "vignette", ["steps"] = input.Steps, ["finalLoss"] = JsonNumbers.Round(loss), ["vocabulary"] = tokenizer.Vocabulary.Count,
            ["heldOutExamples"] = heldOut.Count, ["accuracy"] = JsonNumbers.Round(accuracy),
            ["accuracyWhenTheAnswerIsAState"] = belief ? JsonNumbers.Round(Share(e => e.Completion != BeliefWorld.Unknown)) : null,
            ["accuracyWhenTheAnswerIsUnknown"] = belief ? JsonNumbers.Round(Share(e => e.Completion == BeliefWorld.Unknown)) : null,
            ["note"] = belief ? "greedy answer equals the belief" : "greedy answer equals a sampled label (vignette labels are random draws; see causal.toy-task for the planted probabilities)",
        };
        File.WriteAllText(context.OutputFile("metrics"), metrics.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"{metrics["task"]}: held-out accuracy {accuracy:P1}, final loss {loss:F4}");
        return Task.CompletedTask;
    }
}
