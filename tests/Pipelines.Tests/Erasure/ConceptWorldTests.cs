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
        Assert.Equal(10 * 8 * 3, corpus.Count);
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
        Assert.Equal(10 * 6 * 3, File.ReadAllLines(_ws.Store.ObjectPath(outputs["corpus"].Digest)).Length);
    }

    public void Dispose() => _ws.Dispose();
}
