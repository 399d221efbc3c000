using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Erasure;

/// <summary>
/// Imports a user's erasure data from files: an MCQ set in lm-eval / WMDP's layout (question, choices, answer index)
/// or the Harry Potter MCQ layout (answer as a letter or the option's text), JSON or JSONL, and text corpora (JSONL with
/// "text", or one document per line). Every row is checked; the outputs are the layouts erasure.train and
/// erasure.probe read.
/// </summary>
[Activity("erasure.import", Version = 1, Category = "Erasure", Summary = "Import a concept's MCQs (lm-eval / WMDP or Harry Potter layout) and forget / retain corpora from files for erasure.train and erasure.probe")]
[Output("mcq", ArtifactKinds.Dataset, Help = "mcq.jsonl: question, choices, answer (index), split", MediaType = "application/x-ndjson", FileName = "mcq.jsonl")]
[Output("forget", ArtifactKinds.Dataset, Help = "forget.jsonl: the concept's text", MediaType = "application/x-ndjson", FileName = "forget.jsonl")]
[Output("retain", ArtifactKinds.Dataset, Help = "retain.jsonl: other text", MediaType = "application/x-ndjson", FileName = "retain.jsonl")]
public sealed class ErasureImportActivity : Activity<ErasureImportActivity.Input>
{
    public sealed record Input
    {
        [Input("The concept's MCQs: a JSON array, {\"data\": [...]} or JSONL; each row question, choices (or A-D), answer (index, letter or text)", IsPath = true, PathKind = PathKind.File)]
        public required string Mcq { get; init; }

        [Input("The concept's text: JSONL with \"text\", or one document per line", IsPath = true, PathKind = PathKind.File)]
        public required string Forget { get; init; }

        [Input("Text to retain: JSONL with \"text\", or one document per line", IsPath = true, PathKind = PathKind.File)]
        public required string Retain { get; init; }

        [Input("Keep documents of at most this many characters (ELM clips to 50-700)", Minimum = 1)]
        public int MaxCharacters { get; init; } = 700;

        [Input("Drop documents shorter than this many characters", Minimum = 0)]
        public int MinCharacters { get; init; } = 50;
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var questions = McqFiles.Read(input.Mcq, Path.GetFileName(input.Mcq));
        Jsonl.Write(context.OutputFile("mcq"), questions.Select(q => new JsonObject
        {
            ["question"] = q.Question, ["choices"] = new JsonArray(q.Choices.Select(c => (JsonNode)c).ToArray()), ["answer"] = q.Answer,
            ["split"] = q.Split.Length > 0 ? q.Split : null, ["subject"] = q.Domain,
        }));
        IEnumerable<JsonObject> Clipped(string path)
        {
            var texts = McqFiles.Texts(path, Path.GetFileName(path)).Where(t => t.Length >= input.MinCharacters)
                .Select(t => t.Length > input.MaxCharacters ? t[..input.MaxCharacters] : t).ToList();
            if (texts.Count == 0)
            {
                throw new ActivityException($"{Path.GetFileName(path)}: no document of at least {input.MinCharacters} characters");
            }
            return texts.Select(t => new JsonObject { ["text"] = t });
        }
        var forget = Clipped(input.Forget).ToList();
        var retain = Clipped(input.Retain).ToList();
        Jsonl.Write(context.OutputFile("forget"), forget);
        Jsonl.Write(context.OutputFile("retain"), retain);
        context.Log($"{questions.Count} questions, {forget.Count} forget and {retain.Count} retain documents");
        return Task.CompletedTask;
    }
}
