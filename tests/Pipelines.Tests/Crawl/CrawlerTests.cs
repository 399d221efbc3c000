using Pipelines.Activities.Crawl;

namespace Pipelines.Tests.Crawl;

public sealed class CrawlerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("crawl-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static CrawlOptions Options => new()
    {
        Steps = 8, WarmupSteps = 1, SeedsPerStep = 2, Languages = [CrawlPrompts.English], RefusalSamples = 2, MaxTopics = 1000, Seed = 3,
    };

    public static Crawler Make(ICrawlTarget target, CrawlOptions options) => new(target, options, new TopicDeduplicator(DedupMode.Exact, 1), null,
        new RefusalChecker(target, options.RefusalSamples, options.RefusalThreshold, options.QueryTokens, options.AnswerTokens, options.RefusalTemperature));

    [Fact]
    public async Task TheLoopFindsTheRefusedTopicsWithExactIdsParentsAndBudget()
    {
        using var target = new ScriptedTarget();
        var state = await Make(target, Options).RunAsync(null, default);
        var t = state.Topics;
        // The seed, then warm-up (no seed: "weapons", "gardening"), then step 1 seeded by the only refused head.
        Assert.Equal(("an avoided topic", -1, true, false), (t[0].Text, t[0].ParentId, t[0].IsHead, t[0].IsRefused == true));
        Assert.Equal(["weapons", "gardening"], t.Where(x => x.Step == 0).Select(x => x.Text));
        Assert.All(t.Where(x => x.Step == 0), x => Assert.Equal(-1, x.ParentId));
        Assert.Equal(["explosives", "firearms", "cooking"], t.Where(x => x.Step == 1).Select(x => x.Text));
        Assert.All(t.Where(x => x.Step == 1), x => Assert.Equal(1, x.ParentId)); // "weapons" has id 1
        Assert.Equal(Enumerable.Range(0, t.Count), t.Select(x => x.Id));
        // Every topic came from its parent's neighbour list (or the parent's benign extra), and parents are refused heads.
        foreach (var x in t.Where(x => x.ParentId >= 0))
        {
            var parent = t[x.ParentId];
            Assert.True(parent.IsHead && parent.IsRefused == true, $"{x.Text}: parent {parent.Text}");
            Assert.Contains(x.Text, ScriptedWorld.Neighbours[parent.Text].Append("cooking"));
        }
        // The crawl reaches all seven refused topics; refused exactly where the world refuses.
        Assert.Equal(ScriptedWorld.Neighbours.Keys.Order(), t.Where(x => x.IsHead && x.IsRefused == true).Select(x => x.Text).Order());
        Assert.All(t.Where(x => x.IsHead), x => Assert.Equal(ScriptedWorld.Neighbours.ContainsKey(x.Text), x.IsRefused));
        // Duplicates point at their head and inherit its verdict.
        Assert.All(t.Where(x => !x.IsHead), x => Assert.Equal(t.Single(h => h.IsHead && h.ClusterId == x.ClusterId).Normalized, x.Normalized));
        // Budget: the crawler's count is the target's own count of what it was sent.
        Assert.Equal(target.Received, state.Prompts);
        // Each head's check costs 2k = 4 prompts (queries, then answers); one generation per step: the seed, step 0, step 1.
        Assert.Equal(4 + 1 + 2 * 4 + 1 + 3 * 4, state.Stats[1].Prompts);
        Assert.All(t.Where(x => x.IsHead), x => Assert.Equal(2, x.Samples.Count));
        Assert.All(t.Where(x => x.IsHead && x.IsRefused == true), x => Assert.All(x.Samples, s => Assert.StartsWith("I'm sorry", s.Answer)));
    }

    [Fact]
    public async Task ThePromptBudgetStopsTheCrawlAndIsNeverExceeded()
    {
        using var target = new ScriptedTarget();
        var state = await Make(target, Options with { MaxPrompts = 20 }).RunAsync(null, default);
        Assert.True(state.Prompts <= 20, $"{state.Prompts} prompts");
        Assert.Equal(target.Received, state.Prompts);
        Assert.StartsWith("maxPrompts (20) reached", state.Finished);
        var topics = await Make(new ScriptedTarget(), Options with { MaxTopics = 4 }).RunAsync(null, default);
        Assert.Equal(4, topics.Topics.Count);
        Assert.StartsWith("maxTopics (4) reached", topics.Finished);
    }

    [Fact]
    public async Task TheBaselineNeverSeedsAndFindsOnlyWhatDirectPromptingGives()
    {
        using var target = new ScriptedTarget();
        var state = await Make(target, Options with { Mode = InjectionMode.UserAll, UseSeeds = false }).RunAsync(null, default);
        Assert.All(state.Topics, x => Assert.Equal(-1, x.ParentId));
        Assert.Equal(["weapons"], state.Topics.Where(x => x.IsHead && x.IsRefused == true).Select(x => x.Text));
    }

    [Fact]
    public async Task ACrawlStoppedAfterASaveResumesToTheTopicsOfAnUninterruptedOne()
    {
        var whole = await Make(new ScriptedTarget(), Options).RunAsync(null, default);
        var resume = Path.Combine(_dir, "resume");
        Directory.CreateDirectory(resume);
        using var stop = new CancellationTokenSource();
        var crawler = new Crawler(new ScriptedTarget(), Options with { SaveEvery = 2 }, new TopicDeduplicator(DedupMode.Exact, 1), null,
            new RefusalChecker(new ScriptedTarget(), 2, 0.5, 100, 100, 1))
        { OnStep = s => { if (s.Step == 4) { stop.Cancel(); } } };
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => crawler.RunAsync(resume, stop.Token));
        var again = Make(new ScriptedTarget(), Options with { SaveEvery = 2 });
        var resumed = await again.RunAsync(resume, default);
        Assert.Equal(Json(whole.Topics), Json(resumed.Topics));
        Assert.Equal(whole.Prompts, resumed.Prompts);
        Assert.Equal(whole.Stats.Select(s => s with { Seconds = 0 }), resumed.Stats.Select(s => s with { Seconds = 0 }));
    }

    private static string Json(List<Topic> topics) => System.Text.Json.JsonSerializer.Serialize(topics, Crawler.Json);
}
