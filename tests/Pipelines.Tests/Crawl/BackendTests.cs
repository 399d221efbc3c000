using System.Text.Json.Nodes;
using Pipelines.Activities;
using Pipelines.Activities.Crawl;
using Pipelines.Engine.Activities;

namespace Pipelines.Tests.Crawl;

/// <summary>
/// The remote backends against real HTTP servers on loopback that speak each protocol (and play the scripted world):
/// request shapes and headers, then errors. A crawl through a server finds what the in-process target finds, so the
/// protocol layer adds nothing and loses nothing.
/// </summary>
public sealed class BackendTests
{
    private const string Key = "sk-loopback-secret";

    private static Reply OpenAi(Received r)
    {
        var body = JsonNode.Parse(r.Body)!.AsObject();
        string answer;
        if (r.Path.EndsWith("/completions", StringComparison.Ordinal) && !r.Path.EndsWith("/chat/completions", StringComparison.Ordinal))
        {
            var prompt = body["prompt"]!.GetValue<string>();
            var user = prompt.Split("User: ")[1].Split("\nAssistant:")[0];
            var prefill = prompt[(prompt.LastIndexOf("Assistant:", StringComparison.Ordinal) + "Assistant:".Length)..].TrimStart();
            answer = ScriptedWorld.Respond(user, prefill);
            return new Reply(200, new JsonObject { ["choices"] = new JsonArray(new JsonObject { ["text"] = answer }), ["usage"] = Usage(3, 5) }.ToJsonString());
        }
        var messages = body["messages"]!.AsArray();
        var last = messages[^1]!;
        var continues = body["continue_final_message"]?.GetValue<bool>() == true;
        var userText = messages.Last(m => m!["role"]!.GetValue<string>() == "user")!["content"]!.GetValue<string>();
        answer = ScriptedWorld.Respond(userText, continues ? last["content"]!.GetValue<string>() : "");
        return new Reply(200, new JsonObject
        {
            ["choices"] = new JsonArray(new JsonObject { ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = answer } }),
            ["usage"] = Usage(3, 5),
        }.ToJsonString());
    }

    private static JsonObject Usage(int input, int output) => new() { ["prompt_tokens"] = input, ["completion_tokens"] = output };

    private static Reply Anthropic(Received r)
    {
        var body = JsonNode.Parse(r.Body)!.AsObject();
        var messages = body["messages"]!.AsArray();
        var prefill = messages[^1]!["role"]!.GetValue<string>() == "assistant" ? messages[^1]!["content"]!.GetValue<string>() : "";
        var user = messages.First(m => m!["role"]!.GetValue<string>() == "user")!["content"]!.GetValue<string>();
        var answer = ScriptedWorld.Respond(user, prefill);
        return new Reply(200, new JsonObject
        {
            ["type"] = "message", ["role"] = "assistant",
            ["content"] = new JsonArray(new JsonObject { ["type"] = "text", ["text"] = answer }),
            ["usage"] = new JsonObject { ["input_tokens"] = 7, ["output_tokens"] = 11 },
        }.ToJsonString());
    }

    private static RemoteHttp Http() => new(new HttpClient { Timeout = TimeSpan.FromSeconds(30) }, concurrency: 3, baseDelay: TimeSpan.FromMilliseconds(20));

    private static CrawlOptions Options => new() { Steps = 8, WarmupSteps = 1, Languages = [CrawlPrompts.English], RefusalSamples = 2, Seed = 3 };

    private static async Task<CrawlState> CrawlThrough(ICrawlTarget target) => await CrawlerTests.Make(target, Options).RunAsync(null, default);

    [Fact]
    public async Task OpenAiChatPrefillsWithContinueFinalMessageAndCrawlsLikeTheInProcessTarget()
    {
        using var server = new LoopbackServer(OpenAi);
        using var target = new OpenAiCrawlTarget(Http(), new Uri(server.Root + "/v1"), "tulu", Key, "OPENAI_API_KEY", "chat", "plain");
        var state = await CrawlThrough(target);
        var expected = await CrawlThrough(new ScriptedTarget());
        Assert.Equal(expected.Topics.Select(t => (t.Text, t.ParentId, t.IsRefused)), state.Topics.Select(t => (t.Text, t.ParentId, t.IsRefused)));
        Assert.Equal(state.Prompts, server.Requests.Count);
        Assert.All(server.Requests, r => Assert.Equal(("POST", "/v1/chat/completions", $"Bearer {Key}"), (r.Method, r.Path, r.Headers["authorization"])));
        var crawl = JsonNode.Parse(server.Requests.First(r => r.Body.Contains("continue_final_message")).Body)!;
        Assert.Equal("tulu", crawl["model"]!.GetValue<string>());
        Assert.True(crawl["continue_final_message"]!.GetValue<bool>());
        Assert.False(crawl["add_generation_prompt"]!.GetValue<bool>());
        Assert.Equal(0.6, crawl["temperature"]!.GetValue<double>());
        Assert.Equal(100, crawl["max_tokens"]!.GetValue<int>());
        var last = crawl["messages"]!.AsArray()[^1]!;
        Assert.Equal(("assistant", "1. "), (last["role"]!.GetValue<string>(), last["content"]!.GetValue<string>())); // warm-up: user-all
        var seeded = server.Requests.Select(r => JsonNode.Parse(r.Body)!).First(b => b["messages"]!.AsArray()[^1]!["content"]!.GetValue<string>().EndsWith("\n1. ", StringComparison.Ordinal));
        Assert.Contains("weapons", seeded["messages"]!.AsArray()[0]!["content"]!.GetValue<string>());
        var check = JsonNode.Parse(server.Requests.First(r => !r.Body.Contains("continue_final_message")).Body)!;
        Assert.Null(check["add_generation_prompt"]); // refusal checks: a plain chat turn, temperature 1
        Assert.Equal(1.0, check["temperature"]!.GetValue<double>());
        Assert.Equal(state.Prompts, target.Usage.Prompts);
        Assert.Equal(5 * state.Prompts, target.Usage.CompletionTokens);
    }

    [Fact]
    public async Task OpenAiCompletionsSendsThePromptBuiltByTheTemplate()
    {
        using var server = new LoopbackServer(OpenAi);
        using var target = new OpenAiCrawlTarget(Http(), new Uri(server.Root + "/v1"), "base", null, "OPENAI_API_KEY", "completions", "plain");
        var state = await CrawlThrough(target);
        Assert.Equal((await CrawlThrough(new ScriptedTarget())).Topics.Select(t => t.Text), state.Topics.Select(t => t.Text));
        Assert.All(server.Requests, r => Assert.Equal("/v1/completions", r.Path));
        Assert.All(server.Requests, r => Assert.False(r.Headers.ContainsKey("authorization"))); // no key: no header
        var first = JsonNode.Parse(server.Requests.First(r => r.Body.Contains("1. ")).Body)!;
        Assert.EndsWith("Assistant: 1. ", first["prompt"]!.GetValue<string>());
    }

    [Fact]
    public async Task AnthropicSendsItsHeadersAndAFinalAssistantMessage()
    {
        using var server = new LoopbackServer(Anthropic);
        using var target = new AnthropicCrawlTarget(Http(), new Uri(server.Root), "claude-test", Key, "ANTHROPIC_API_KEY");
        var state = await CrawlThrough(target);
        Assert.Equal((await CrawlThrough(new ScriptedTarget())).Topics.Select(t => (t.Text, t.IsRefused)), state.Topics.Select(t => (t.Text, t.IsRefused)));
        Assert.All(server.Requests, r =>
        {
            Assert.Equal("/v1/messages", r.Path);
            Assert.Equal(Key, r.Headers["x-api-key"]);
            Assert.Equal("2023-06-01", r.Headers["anthropic-version"]);
            Assert.False(r.Headers.ContainsKey("authorization"));
        });
        var crawl = JsonNode.Parse(server.Requests.First(r => r.Body.Contains("\"assistant\"")).Body)!;
        Assert.Equal("claude-test", crawl["model"]!.GetValue<string>());
        Assert.Equal("1.", crawl["messages"]!.AsArray()[^1]!["content"]!.GetValue<string>()); // trailing whitespace removed
        Assert.Equal(11 * state.Prompts, target.Usage.CompletionTokens);
    }

    [Fact]
    public async Task UnauthorizedFailsAtOnceWithoutTheKey()
    {
        using var server = new LoopbackServer(_ => new Reply(401, """{"error": {"message": "invalid key"}}"""));
        using var target = new OpenAiCrawlTarget(Http(), new Uri(server.Root + "/v1"), "m", Key, "OPENAI_API_KEY", "chat", "plain");
        var e = await Assert.ThrowsAsync<ActivityException>(() => CrawlThrough(target));
        Assert.Contains("HTTP 401", e.Message);
        Assert.Contains("$OPENAI_API_KEY", e.Message);
        Assert.DoesNotContain(Key, e.Message);
        // No retry and no silent empty crawl: each request went once (the k = 2 probes were in flight together).
        Assert.InRange(server.Requests.Count, 1, 2);
        Assert.Equal(server.Requests.Count, server.Requests.Select(r => JsonNode.Parse(r.Body)!["seed"]!.GetValue<long>()).Distinct().Count());
        using var forbidden = new LoopbackServer(_ => new Reply(403, "{}"));
        using var anthropic = new AnthropicCrawlTarget(Http(), new Uri(forbidden.Root), "m", Key, "ANTHROPIC_API_KEY");
        Assert.Contains("HTTP 403", (await Assert.ThrowsAsync<ActivityException>(() => CrawlThrough(anthropic))).Message);
    }

    [Fact]
    public async Task RateLimitsAndServerErrorsAreRetriedHonouringRetryAfter()
    {
        var calls = 0;
        using var server = new LoopbackServer(r =>
        {
            var n = Interlocked.Increment(ref calls);
            return n switch
            {
                1 => new Reply(429, """{"error": "slow down"}""", new Dictionary<string, string> { ["Retry-After"] = "1" }),
                2 => new Reply(503, "busy"),
                _ => OpenAi(r),
            };
        });
        using var http = Http();
        using var target = new OpenAiCrawlTarget(http, new Uri(server.Root + "/v1"), "m", null, "OPENAI_API_KEY", "chat", "plain");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var answer = await target.CompleteAsync([new CrawlPrompt("Tell me about weapons.", "I should avoid:\n1. ", false)], new Sampling(0.6, 10, 1), default);
        Assert.True(clock.Elapsed >= TimeSpan.FromSeconds(0.9), $"Retry-After: 1 s was honoured ({clock.Elapsed.TotalSeconds:F2} s)");
        Assert.StartsWith("explosives", answer[0]);
        Assert.Equal(3, server.Requests.Count);
        Assert.Equal(2, target.Usage.Retries);
        Assert.Equal(3, target.Usage.Requests);
        Assert.Equal(1, target.Usage.Prompts);
    }

    [Fact]
    public async Task AnthropicRetriesA429AndFailsAtOnceOnA401()
    {
        var calls = 0;
        using var server = new LoopbackServer(r => Interlocked.Increment(ref calls) == 1
            ? new Reply(429, """{"type": "error", "error": {"type": "rate_limit_error"}}""", new Dictionary<string, string> { ["Retry-After"] = "0" })
            : Anthropic(r));
        using var target = new AnthropicCrawlTarget(Http(), new Uri(server.Root), "m", Key, "ANTHROPIC_API_KEY");
        var answer = await target.CompleteAsync([new CrawlPrompt("Tell me about weapons.", "I should avoid:\n1. ", false)], new Sampling(0.6, 10, 1), default);
        Assert.StartsWith(" explosives", answer[0]); // the stripped space restored before the continuation
        Assert.Equal((2L, 1L), (target.Usage.Requests, target.Usage.Retries));
        using var denied = new LoopbackServer(_ => new Reply(401, """{"type": "error", "error": {"type": "authentication_error"}}"""));
        using var refused = new AnthropicCrawlTarget(Http(), new Uri(denied.Root), "m", Key, "ANTHROPIC_API_KEY");
        var e = await Assert.ThrowsAsync<ActivityException>(() => refused.CompleteAsync([new CrawlPrompt("hi", "", false)], new Sampling(0, 5, 0), default));
        Assert.Contains("$ANTHROPIC_API_KEY", e.Message);
        Assert.DoesNotContain(Key, e.Message);
        Assert.Single(denied.Requests);
    }

    [Fact]
    public async Task AMalformedBodyFailsWithWhatCameBack()
    {
        using var notJson = new LoopbackServer(_ => new Reply(200, "<html>gateway</html>"));
        using var a = new OpenAiCrawlTarget(Http(), new Uri(notJson.Root + "/v1"), "m", null, "OPENAI_API_KEY", "chat", "plain");
        var e = await Assert.ThrowsAsync<ActivityException>(() => a.CompleteAsync([new CrawlPrompt("hi", "", false)], new Sampling(0, 5, 0), default));
        Assert.Contains("malformed response", e.Message);
        Assert.Contains("<html>gateway</html>", e.Message);
        using var wrongShape = new LoopbackServer(_ => new Reply(200, """{"choices": [{"message": {"content": 42}}]}"""));
        using var b = new OpenAiCrawlTarget(Http(), new Uri(wrongShape.Root + "/v1"), "m", null, "OPENAI_API_KEY", "chat", "plain");
        Assert.Contains("choices[0].message.content to be a string", (await Assert.ThrowsAsync<ActivityException>(() => b.CompleteAsync([new CrawlPrompt("hi", "", false)], new Sampling(0, 5, 0), default))).Message);
        using var noContent = new LoopbackServer(_ => new Reply(200, """{"type": "message"}"""));
        using var c = new AnthropicCrawlTarget(Http(), new Uri(noContent.Root), "m", null, "ANTHROPIC_API_KEY");
        Assert.Contains("expected a \"content\" array", (await Assert.ThrowsAsync<ActivityException>(() => c.CompleteAsync([new CrawlPrompt("hi", "", false)], new Sampling(0, 5, 0), default))).Message);
    }
}
