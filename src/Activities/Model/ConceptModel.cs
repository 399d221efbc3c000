using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Erasure;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Training;

namespace Pipelines.Activities.Model;

/// <summary>
/// model.train-toy's concept task: a small LM of a concept world (erasure.concept-world), next-token loss on its corpus
/// (passages, expert/novice texts, facts as open questions). The metrics give MCQ accuracy by the options' likelihood
/// after the open question (lm-eval's multiple-choice rule) on both splits, and by ELM's letter scorer, which a model
/// this small does not learn to use (chance is 25 %).
/// </summary>
internal static class ConceptModel
{
    public static Task Train(TrainToyActivity.Input input, ActivityContext context)
    {
        var world = ConceptWorld.Read((input.World ?? throw new ActivityException("inputs.world: the concept task needs a world (connect erasure.concept-world's world)")).Path);
        var tokenizer = world.Tokenizer();
        foreach (var d in input.ExcludeDomains)
        {
            if (world.Domains.All(x => x.Name != d))
            {
                throw new ActivityException($"inputs.excludeDomains: no domain \"{d}\" (domains: {string.Join(", ", world.Domains.Select(x => x.Name))})");
            }
        }
        var options = RefusalChat.ChatOptions(input);
        var output = context.OutputDirectory("model");
        var loss = ChatTrainer.Train(options, tokenizer, ConceptWorld.SpecialTokens, step => world.Batch(step, input.BatchSize, input.Seed, input.ExcludeDomains),
            output, (step, l) => context.Report((double)step / input.Steps, $"step {step}, loss {l:F4}"), context.CancellationToken, context.ResumeDirectory);
        Directory.CreateDirectory(context.OutputDirectory("checkpoints"));
        using var model = Checkpoint.Load(output);
        var trainSplit = world.Questions.Where(q => q.Split == "train").ToList();
        var heldOutSplit = world.Questions.Where(q => q.Split == "held-out").ToList();
        var train = McqScorer.ScoreByLikelihood(model, tokenizer, trainSplit, ConceptWorld.QaPrompt);
        var heldOut = McqScorer.ScoreByLikelihood(model, tokenizer, heldOutSplit, ConceptWorld.QaPrompt);
        var letters = McqScorer.Score(model, tokenizer, heldOutSplit);
        var metrics = new JsonObject
        {
            ["task"] = "concept", ["steps"] = input.Steps, ["finalLoss"] = JsonNumbers.Round(loss), ["vocabulary"] = tokenizer.Vocabulary.Count,
            ["chance"] = 0.25, ["trainMcqAccuracy"] = JsonNumbers.Round(train.Accuracy), ["heldOutMcqAccuracy"] = JsonNumbers.Round(heldOut.Accuracy),
            ["heldOutMcqs"] = heldOut.Total, ["scorer"] = "likelihood of the option text after the open question",
            ["heldOutLetterAccuracy"] = JsonNumbers.Round(letters.Accuracy),
        };
        File.WriteAllText(context.OutputFile("metrics"), metrics.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"concept: MCQ accuracy {train.Accuracy:P1} (train), {heldOut.Accuracy:P1} (held-out) by likelihood, {letters.Accuracy:P1} by letter; chance 25 %; final loss {loss:F4}");
        return Task.CompletedTask;
    }
}
