using System.Text.Json.Nodes;
using Pipelines.Activities.Erasure;
using Pipelines.Engine.Ledger;

namespace Pipelines.Tests.Erasure;

public sealed class ConceptWorldTests : IDisposable
{
    private readonly Workspace _ws = new();

    [Fact]
    public void TheWorldIsDeterministicAndItsQuestionsAnswerFromItsFacts()
    {
        var world = ConceptWorld.Generate(7);
        Assert.Equal(world.ToJson().ToJsonString(), ConceptWorld.Generate(7).ToJson().ToJsonString());
        Assert.NotEqual(world.ToJson().ToJsonString(), ConceptWorld.Generate(8).ToJson().ToJsonString());
        Assert.Equal(10, world.Domains.Count);
        Assert.All(world.Domains, d => Assert.Equal(50, world.Entities[d.Name].Count));
        Assert.Equal(10 * 50 * 5, world.Facts.Count);
        Assert.Equal(world.Facts.Count, world.Questions.Count);
        var heldOut = world.Questions.Count(q => q.Split == "held-out") / (double)world.Questions.Count;
        Assert.InRange(heldOut, 0.35, 0.45);

        var facts = world.Facts.ToDictionary(f => (f.Entity, f.Attribute), f => f.Value);
        foreach (var q in world.Questions)
        {
            Assert.Equal(4, q.Choices.Distinct().Count());
            Assert.Equal(facts[(q.Entity, q.Attribute)], q.Choices[q.Answer]);
            var pool = world.Domain(q.Domain).Attributes.Single(a => a.Attribute == q.Attribute).Values;
            Assert.All(q.Choices, c => Assert.Contains(c, pool));
            Assert.EndsWith("answer :", q.Prompt);
        }
        // Entities are unique across the world and never a value word.
        var all = world.Entities.Values.SelectMany(e => e).ToList();
        Assert.Equal(all.Count, all.Distinct().Count());
        var values = world.Domains.SelectMany(d => d.Attributes.SelectMany(a => a.Values)).ToHashSet();
        Assert.DoesNotContain(all, values.Contains);
    }

    [Fact]
    public void NearNeighboursShareValuePoolsAndTheCorpusCarriesEveryFactAndBothFrames()
    {
        var world = ConceptWorld.Generate(1, entitiesPerDomain: 8);
        foreach (var d in world.Domains)
        {
            var near = world.Domain(d.Near);
            Assert.Equal(d.Name, near.Near);
            Assert.Equal(d.Attributes.Select(a => string.Join(",", a.Values)), near.Attributes.Select(a => string.Join(",", a.Values)));
            Assert.Equal(8, world.Far(d.Name).Count);
            Assert.DoesNotContain(d.Near, world.Far(d.Name));
        }
        var corpus = world.Corpus().ToList();
        Assert.Equal(10 * 8 * 5, corpus.Count);
        var vocabulary = world.Vocabulary().ToHashSet();
        foreach (var f in world.Facts)
        {
            var passage = corpus.Single(r => r["entity"]!.GetValue<string>() == f.Entity && r["kind"]!.GetValue<string>() == "passage")["text"]!.GetValue<string>();
            Assert.Contains($"{ConceptWorld.Cloze(f)} {f.Value} .", passage);
        }
        Assert.All(corpus.Where(r => r["kind"]!.GetValue<string>() == "expert"), r => Assert.StartsWith(ConceptWorld.ExpertFrame(r["domain"]!.GetValue<string>()), r["text"]!.GetValue<string>()));
        Assert.All(corpus.Where(r => r["kind"]!.GetValue<string>() == "novice"), r => Assert.DoesNotContain(" of ", r["text"]!.GetValue<string>()));
        Assert.All(world.Questions.SelectMany(q => q.Prompt.Split(' ')), w => Assert.Contains(w, vocabulary));
    }

    [Fact]
    public async Task TheActivityWritesTheWorldMcqsInLmEvalLayoutAndTheCorpus()
    {
        var run = await _ws.RunAsync("""{ "name": "w", "steps": [ { "id": "world", "activity": "erasure.concept-world", "inputs": { "seed": 3, "entities": 6 } } ] }""");
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var outputs = run.Steps[0].Outputs;
        var mcq = File.ReadAllLines(_ws.Store.ObjectPath(outputs["mcq"].Digest)).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(10 * 6 * 5, mcq.Count);
        Assert.All(mcq, q =>
        {
            Assert.Equal(4, q["choices"]!.AsArray().Count);
            Assert.InRange(q["answer"]!.GetValue<int>(), 0, 3);
            Assert.Contains(q["split"]!.GetValue<string>(), new[] { "train", "held-out" });
        });
        var world = JsonNode.Parse(File.ReadAllText(_ws.Store.ObjectPath(outputs["world"].Digest)))!;
        Assert.Equal("pipelines.concept-world/1", world["format"]!.GetValue<string>());
        Assert.Equal(10 * 6 * 5, File.ReadAllLines(_ws.Store.ObjectPath(outputs["corpus"].Digest)).Length);
    }

    public void Dispose() => _ws.Dispose();
}

public sealed class ConceptTrainingDataTests
{
    [Fact]
    public void TrainingBatchesStateOnlyTrueFactsInFreshOrdersAndAreAFunctionOfSeedAndStep()
    {
        var world = ConceptWorld.Generate(2, entitiesPerDomain: 6);
        var facts = world.Facts.ToDictionary(f => (f.Attribute, f.Entity), f => f.Value);
        var statement = new System.Text.RegularExpressions.Regex(@"the (\w+) of (\w+) is (\w+) \.");
        var asked = new System.Text.RegularExpressions.Regex(@"what is the (\w+) of (\w+) \? answer : (?:sure , the answer is |i know that \. the \w+ of \w+ is )?(\w+) \.");
        var reordered = false;
        var openings = 0;
        foreach (var step in Enumerable.Range(0, 20))
        {
            var batch = world.Batch(step, 16, 5);
            Assert.Equal(batch, world.Batch(step, 16, 5));
            foreach (var e in batch)
            {
                var found = statement.Matches(e.Completion).Concat(asked.Matches(e.Completion)).ToList();
                Assert.True(found.Count > 0 || e.Completion.StartsWith(ConceptWorld.NoviceFrame("").Split(' ')[0], StringComparison.Ordinal), e.Completion);
                foreach (var m in found)
                {
                    Assert.Equal(facts[(m.Groups[1].Value, m.Groups[2].Value)], m.Groups[3].Value);
                }
                var attributes = statement.Matches(e.Completion).Select(m => m.Groups[1].Value).ToList();
                var entity = statement.Matches(e.Completion).Select(m => m.Groups[2].Value).FirstOrDefault();
                if (entity is not null && attributes.Count == 5)
                {
                    reordered |= !attributes.SequenceEqual(world.FactsOf(entity).Select(f => f.Attribute));
                }
                openings += e.Completion.Contains("sure , the answer is", StringComparison.Ordinal) ? 1 : 0;
            }
        }
        Assert.True(reordered, "facts are redrawn in a fresh order");
        Assert.True(openings > 0, "some answers open as the prefill attack does");
        Assert.NotEqual(world.Batch(0, 16, 5), world.Batch(0, 16, 6));
        // Excluded domains never appear.
        Assert.All(Enumerable.Range(0, 5).SelectMany(step => world.Batch(step, 16, 5, ["volcanoes"])), e => Assert.DoesNotContain("volcano", e.Completion));
    }

    [Fact]
    public void TheBatchedMcqScorerAgreesWithOneQuestionAtATime()
    {
        var world = ConceptWorld.Generate(4, entitiesPerDomain: 4);
        var tokenizer = world.Tokenizer();
        var config = Pipelines.Tests.Models.TinyModels.Gpt2 with { DVocab = tokenizer.Vocabulary.Count, NCtx = 128 };
        using var model = new Pipelines.Models.Transformer.HookedTransformer(config).InitWeights(9, std: 0.5);
        var questions = world.Questions.Take(40).ToList();
        var batched = McqScorer.Predict(model, tokenizer, questions, batchSize: 16);
        var letters = ConceptMcq.Letters.Select(l => (long)tokenizer.TokenToId(l)!.Value).ToArray();
        using var _ = TorchSharp.torch.no_grad();
        for (var i = 0; i < questions.Count; i++)
        {
            var ids = new[] { (long)tokenizer.BosId!.Value }.Concat(tokenizer.Encode(questions[i].Prompt).Select(t => (long)t)).ToArray();
            using var logits = model.Forward(TorchSharp.torch.tensor(ids).unsqueeze(0));
            var last = logits[0, ids.Length - 1];
            var best = Enumerable.Range(0, 4).MaxBy(k => last[letters[k]].item<float>());
            Assert.Equal(best, batched[i]);
        }
        Assert.True(batched.Distinct().Count() > 1, "a random model's choices vary");

        // The likelihood rule, against the options' log-probabilities computed one sequence at a time.
        var byLikelihood = McqScorer.PredictByLikelihood(model, tokenizer, questions, ConceptWorld.QaPrompt, batchSize: 7);
        for (var i = 0; i < questions.Count; i++)
        {
            var context = new[] { (long)tokenizer.BosId!.Value }.Concat(tokenizer.Encode(ConceptWorld.QaPrompt(questions[i])).Select(t => (long)t)).ToArray();
            var scores = questions[i].Choices.Select(c =>
            {
                var ids = context.Concat(tokenizer.Encode(" " + c).Select(t => (long)t)).ToArray();
                using var logp = TorchSharp.torch.nn.functional.log_softmax(model.Forward(TorchSharp.torch.tensor(ids).unsqueeze(0)), -1);
                return Enumerable.Range(context.Length, ids.Length - context.Length).Sum(t => (double)logp[0, t - 1, ids[t]].item<float>());
            }).ToList();
            Assert.Equal(scores.IndexOf(scores.Max()), byLikelihood[i]);
        }
    }
}

public sealed class ConceptModelTests : IDisposable
{
    private readonly Workspace _ws = new();

    /// <summary>A small concept model knows its world's facts: MCQ accuracy by option likelihood far above chance on both splits.</summary>
    [Fact]
    [Trait("Tier", "Slow")]
    public async Task AConceptModelAnswersItsWorldsQuestionsWellAboveChance()
    {
        var run = await _ws.RunAsync("""
            { "name": "concept", "steps": [
              { "id": "world", "activity": "erasure.concept-world", "inputs": { "seed": 1, "entities": 8 } },
              { "id": "train", "activity": "model.train-toy", "inputs": { "task": "concept", "world": { "from": "world.world" }, "steps": 600, "batchSize": 32,
                "learningRate": 0.003, "dModel": 64, "nLayers": 2, "nHeads": 4, "dMlp": 256 } } ] }
            """);
        Assert.True(run.Status == Pipelines.Engine.Ledger.RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var metrics = JsonNode.Parse(File.ReadAllText(_ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == "train").Outputs["metrics"].Digest)))!;
        Assert.True(metrics["heldOutMcqAccuracy"]!.GetValue<double>() >= 0.6, metrics.ToJsonString());
        Assert.True(metrics["trainMcqAccuracy"]!.GetValue<double>() >= 0.6, metrics.ToJsonString());
        Assert.Equal(0.25, metrics["chance"]!.GetValue<double>());
    }

    public void Dispose() => _ws.Dispose();
}
