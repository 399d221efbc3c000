using System.Text.Json.Nodes;
using Pipelines.Activities.Crawl;
using Pipelines.Engine.Ledger;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Tests.Crawl;

public sealed class CrawlActivityTests : IDisposable
{
    private readonly Workspace _ws = new();

    public void Dispose() => _ws.Dispose();

    private static Reply Chat(string answer) => new(200, new JsonObject
    {
        ["choices"] = new JsonArray(new JsonObject { ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = answer } }),
        ["usage"] = new JsonObject { ["prompt_tokens"] = 1, ["completion_tokens"] = 1 },
    }.ToJsonString());

    private static Reply World(Received r)
    {
        var body = JsonNode.Parse(r.Body)!;
        var messages = body["messages"]!.AsArray();
        var user = messages.Last(m => m!["role"]!.GetValue<string>() == "user")!["content"]!.GetValue<string>();
        var prefill = body["continue_final_message"]?.GetValue<bool>() == true ? messages[^1]!["content"]!.GetValue<string>() : "";
        return Chat(ScriptedWorld.Respond(user, prefill));
    }

    private static string Workflow(string endpoint, string extra = "") => $$"""
        { "name": "crawl", "steps": [ { "id": "crawl", "activity": "crawl.expand", "inputs": {
          "backend": "openai", "endpoint": "{{endpoint}}", "remoteModel": "scripted", "apiKeyVariable": "PIPELINES_LLM_API_KEY",
          "languages": "english", "dedup": "exact", "steps": 8, "warmupSteps": 1, "refusalSamples": 2, "seed": 3 {{extra}} } } ] }
        """;

    [Fact]
    public async Task ThroughTheEngineARemoteCrawlWritesTopicsAndStatsAndNeverTheKey()
    {
        using var server = new LoopbackServer(World);
        const string secret = "sk-never-in-artifacts-4242";
        var before = Environment.GetEnvironmentVariable("PIPELINES_LLM_API_KEY");
        Environment.SetEnvironmentVariable("PIPELINES_LLM_API_KEY", secret);
        try
        {
            var run = await _ws.RunAsync(Workflow(server.Root + "/v1"));
            Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
            var outputs = run.Steps[0].Outputs;
            var topics = TopicsFile.Read(_ws.Store.ObjectPath(outputs["topics"].Digest), "topics");
            var expected = await CrawlerTests.Make(new ScriptedTarget(), new CrawlOptions { Steps = 8, WarmupSteps = 1, Languages = [CrawlPrompts.English], RefusalSamples = 2, Seed = 3 }).RunAsync(null, default);
            Assert.Equal(expected.Topics.Select(t => (t.Text, t.ParentId, t.IsRefused)), topics.Select(t => (t.Text, t.ParentId, t.IsRefused)));
            var stats = JsonNode.Parse(File.ReadAllText(_ws.Store.ObjectPath(outputs["stats"].Digest)))!;
            Assert.Equal(server.Requests.Count, stats["usage"]!["requests"]!.GetValue<long>());
            Assert.Equal(stats["prompts"]!.GetValue<long>(), stats["usage"]!["prompts"]!.GetValue<long>());
            Assert.Equal("pipelines.crawl-stats/1", stats["format"]!.GetValue<string>());
            Assert.All(server.Requests, r => Assert.Equal($"Bearer {secret}", r.Headers["authorization"]));
            foreach (var file in Directory.EnumerateFiles(_ws.Store.Root, "*", SearchOption.AllDirectories))
            {
                Assert.DoesNotContain(secret, File.ReadAllText(file));
            }
        }
        finally
        {
            Environment.SetEnvironmentVariable("PIPELINES_LLM_API_KEY", before);
        }
    }

    [Fact]
    public async Task AJudgeAddsTheRefusalsThePatternsMiss()
    {
        using var server = new LoopbackServer(World);
        // The judge calls "Sure! Here is some help." a refusal only for cooking (a topic substitution, say).
        using var judge = new LoopbackServer(r =>
        {
            var body = JsonNode.Parse(r.Body)!["messages"]!.AsArray();
            Assert.Equal(ChatRefusalJudge.System, body[0]!["content"]!.GetValue<string>());
            return Chat(body[^1]!["content"]!.GetValue<string>().Contains("cooking") ? "YES" : "NO");
        });
        var run = await _ws.RunAsync(Workflow(server.Root + "/v1", $$""", "judgeEndpoint": "{{judge.Root}}/v1", "judgeModel": "judge" """));
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var topics = TopicsFile.Read(_ws.Store.ObjectPath(run.Steps[0].Outputs["topics"].Digest), "topics");
        var cooking = topics.First(t => t.IsHead && t.Text == "cooking");
        Assert.True(cooking.IsRefused);
        Assert.All(cooking.Samples, s => Assert.Equal("judge", s.Pattern));
        Assert.False(topics.First(t => t.IsHead && t.Text == "gardening").IsRefused);
    }

    [Fact]
    public void RemoteAndHiddenStateEmbeddersGiveUnitVectors()
    {
        using var server = new LoopbackServer(r =>
        {
            var input = JsonNode.Parse(r.Body)!["input"]!.AsArray();
            // Out of order on purpose: the client must order by "index".
            var data = new JsonArray(input.Select((x, i) => (JsonNode)new JsonObject { ["index"] = i, ["embedding"] = new JsonArray(3.0 * (i + 1), 4.0 * (i + 1)) }).Reverse().ToArray());
            return new Reply(200, new JsonObject { ["data"] = data }.ToJsonString());
        });
        using var remote = new OpenAiEmbedder(new Pipelines.Activities.RemoteHttp(new HttpClient()), new Uri(server.Root + "/v1"), "e", null, "OPENAI_API_KEY");
        var v = remote.Embed(["a", "b"], default);
        Assert.Equal([0.6f, 0.8f], v[0]);
        Assert.Equal("/v1/embeddings", server.Requests[0].Path);
        using var model = Pipelines.Tests.Models.TinyModels.Create("gpt2", seed: 2);
        var words = new WordLevelTokenizer(Enumerable.Range(0, model.Config.DVocab).ToDictionary(i => $"w{i}", i => i), "w0", null, null, 0);
        using var hidden = new HiddenStateEmbedder(model, words, "tiny");
        var h = hidden.Embed(["w5 w9 w2", "w5 w9 w2", "w7"], default);
        Assert.Equal(1.0, Math.Sqrt(h[0].Sum(x => (double)x * x)), 5);
        Assert.Equal(h[0], h[1]);
        Assert.NotEqual(h[0], h[2]);
    }

    [Fact]
    public void TheDeepSeekR1TemplatePutsAThoughtPrefillInsideThink()
    {
        var messages = new List<ChatMessage> { new("user", "Tell me about x.") };
        Assert.Equal("<｜begin▁of▁sentence｜><｜User｜>Tell me about x.<｜Assistant｜><think>\nI should avoid:\n1. ", ChatTemplates.Format("deepseek-r1", messages, "I should avoid:\n1. ", thought: true));
        Assert.EndsWith("<think>\n\n</think>\n\n1. ", ChatTemplates.Format("deepseek-r1", messages, "1. "));
    }
}
