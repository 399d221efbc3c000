using System.Text.Json;
using Pipelines.Activities.Data;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Erasure;

/// <summary>Generates the concept world: domains, facts, MCQs and the pre-training corpus (see <see cref="ConceptWorld"/>).</summary>
[Activity("erasure.concept-world", Version = 2, Category = "Erasure", Summary = "Generate a world of planted concepts (10 domains in 5 near pairs, invented entities, facts) with MCQs, passages and expert/novice documents")]
[Output("world", ArtifactKinds.Json, Help = "world.json: domains (attributes, value pools, entities, near and far neighbours) and every fact", MediaType = "application/json", FileName = "world.json")]
[Output("mcq", ArtifactKinds.Dataset, Help = "Four-option MCQs in lm-eval / WMDP's layout (question, choices, answer index) with domain, entity, attribute and split (train or held-out)", MediaType = "application/x-ndjson", FileName = "mcq.jsonl")]
[Output("corpus", ArtifactKinds.Dataset, Help = "Pre-training text per entity: a passage, an expert-framed passage, a novice-framed text and its facts as open questions (domain, entity, kind, text)", MediaType = "application/x-ndjson", FileName = "corpus.jsonl")]
public sealed class ConceptWorldActivity : Activity<ConceptWorldActivity.Input>
{
    public sealed record Input
    {
        [Input("Seed of the world")]
        public int Seed { get; init; }

        [Input("Entities per domain", Minimum = 4, Maximum = 200)]
        public int Entities { get; init; } = 50;

        [Input("Fraction of the facts whose MCQ is held out (the facts still appear in the passages)", Minimum = 0, Maximum = 0.9)]
        public double HeldOut { get; init; } = 0.4;
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var world = ConceptWorld.Generate(input.Seed, input.Entities, input.HeldOut);
        File.WriteAllText(context.OutputFile("world"), world.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        Jsonl.Write(context.OutputFile("mcq"), world.Questions.Select(q => q.ToJson()));
        Jsonl.Write(context.OutputFile("corpus"), world.Corpus());
        var heldOut = world.Questions.Count(q => q.Split == "held-out");
        context.Log($"{world.Domains.Count} domains, {world.Facts.Count} facts, {world.Questions.Count} MCQs ({heldOut} held out), {world.Vocabulary().Count} words");
        return Task.CompletedTask;
    }
}
