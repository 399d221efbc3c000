using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Models.Generation;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;

namespace Pipelines.Activities.Crawl;

/// <summary>How a target samples: temperature, the most new tokens, and a seed (local targets and servers that take one).</summary>
public sealed record Sampling(double Temperature, int MaxTokens, long Seed);

/// <summary>What a target has been asked so far: prompts sent, HTTP requests (with retries), tokens in and out.</summary>
public sealed record TargetUsage(long Prompts, long Requests, long Retries, long PromptTokens, long CompletionTokens);

/// <summary>
/// The model a crawl interrogates. Each prompt is one conversation whose answer must begin with its prefill; the
/// result is the continuation after the prefill. Local, OpenAI-compatible and Anthropic backends implement it.
/// </summary>
public interface ICrawlTarget : IDisposable
{
    /// <summary>What answered, for the stats (backend, model; never a key).</summary>
    string Name { get; }

    TargetUsage Usage { get; }

    Task<IReadOnlyList<string>> CompleteAsync(IReadOnlyList<CrawlPrompt> prompts, Sampling sampling, CancellationToken ct);
}

/// <summary>The instruction that makes a model without a reasoning template write its thoughts in tags (§A.4).</summary>
internal static class ThoughtEmulation
{
    public const string System = "Organize your thoughts within XML tags using <think> </think> before responding.";

    /// <summary>The messages and the assistant's prefill for a template family, with the thought prefill emulated where needed.</summary>
    public static (List<ChatMessage> Messages, string Prefill, bool TemplateThought) Layout(CrawlPrompt p, bool reasoningTemplate)
    {
        var messages = new List<ChatMessage>();
        if (p.Thought && !reasoningTemplate)
        {
            messages.Add(new ChatMessage("system", p.System is null ? System : p.System + "\n" + System));
        }
        else if (p.System is not null)
        {
            messages.Add(new ChatMessage("system", p.System));
        }
        messages.Add(new ChatMessage("user", p.User));
        var prefill = p.Thought && !reasoningTemplate ? "<think>\n" + p.Prefill : p.Prefill;
        return (messages, prefill, p.Thought && reasoningTemplate);
    }
}

/// <summary>
/// One of our checkpoints as the target: the prompt built with a named chat template, the answer prefilled, and the
/// whole batch generated together (left-padded, KV-cached) by <see cref="TextGenerator"/>.
/// </summary>
public sealed class LocalCrawlTarget(HookedTransformer model, ITextTokenizer tokenizer, string template, string name, int batchSize = 32) : ICrawlTarget
{
    private long _prompts, _promptTokens, _completionTokens;

    public string Name => $"local {name} ({template} template)";

    public TargetUsage Usage => new(_prompts, 0, 0, _promptTokens, _completionTokens);

    public Task<IReadOnlyList<string>> CompleteAsync(IReadOnlyList<CrawlPrompt> prompts, Sampling sampling, CancellationToken ct)
    {
        var texts = prompts.Select(p =>
        {
            var (messages, prefill, thought) = ThoughtEmulation.Layout(p, template == "deepseek-r1");
            return ChatTemplates.Format(template, messages, prefill, thought);
        }).ToList();
        var results = new List<string>(texts.Count);
        var generator = new TextGenerator(model, tokenizer);
        for (var start = 0; start < texts.Count; start += batchSize)
        {
            ct.ThrowIfCancellationRequested();
            var chunk = texts.Skip(start).Take(batchSize).ToList();
            IReadOnlyList<Generated> generated;
            try
            {
                generated = generator.Generate(chunk, new GenerationOptions
                {
                    MaxNewTokens = sampling.MaxTokens, Temperature = sampling.Temperature, Seed = sampling.Seed + start,
                });
            }
            catch (ArgumentException e)
            {
                throw new ActivityException($"target {Name}: {e.Message}");
            }
            foreach (var g in generated)
            {
                results.Add(g.Text);
                _promptTokens += tokenizer.Encode(g.Prompt).Count;
                _completionTokens += g.Tokens.Count;
            }
        }
        _prompts += texts.Count;
        return Task.FromResult<IReadOnlyList<string>>(results);
    }

    public void Dispose()
    {
    }
}

/// <summary>
/// An OpenAI-compatible server (vLLM, llama.cpp, Ollama, LiteLLM). <c>chat</c>: <c>POST {endpoint}/chat/completions</c>
/// with the prefill as a final assistant message and vLLM's <c>"continue_final_message": true,
/// "add_generation_prompt": false</c>; <c>completions</c>: <c>POST {endpoint}/completions</c> with the prompt built by a
/// local chat template (for servers without continue_final_message).
/// </summary>
public sealed class OpenAiCrawlTarget(RemoteHttp http, Uri endpoint, string model, string? apiKey, string keyVariable, string api, string template) : ICrawlTarget
{
    private long _prompts, _promptTokens, _completionTokens;

    public string Name => $"openai {model} at {endpoint.GetLeftPart(UriPartial.Path)} ({api})";

    public TargetUsage Usage => new(Interlocked.Read(ref _prompts), http.Requests, http.Retries, Interlocked.Read(ref _promptTokens), Interlocked.Read(ref _completionTokens));

    public async Task<IReadOnlyList<string>> CompleteAsync(IReadOnlyList<CrawlPrompt> prompts, Sampling sampling, CancellationToken ct)
    {
        var tasks = prompts.Select((p, i) => One(p, sampling with { Seed = sampling.Seed + i }, ct)).ToList();
        return await Task.WhenAll(tasks);
    }

    /// <summary>The request body for one prompt (public so tests and the README show the exact shape).</summary>
    public JsonObject Body(CrawlPrompt p, Sampling sampling)
    {
        var body = new JsonObject { ["model"] = model, ["max_tokens"] = sampling.MaxTokens, ["temperature"] = sampling.Temperature, ["seed"] = sampling.Seed };
        if (api == "completions")
        {
            var (messages, prefill, thought) = ThoughtEmulation.Layout(p, template == "deepseek-r1");
            body["prompt"] = ChatTemplates.Format(template, messages, prefill, thought);
            return body;
        }
        var (chat, chatPrefill, _) = ThoughtEmulation.Layout(p, reasoningTemplate: false);
        var list = new JsonArray(chat.Select(m => (JsonNode)new JsonObject { ["role"] = m.Role, ["content"] = m.Content }).ToArray());
        if (chatPrefill.Length > 0)
        {
            list.Add(new JsonObject { ["role"] = "assistant", ["content"] = chatPrefill });
            body["continue_final_message"] = true;
            body["add_generation_prompt"] = false;
        }
        body["messages"] = list;
        return body;
    }

    private async Task<string> One(CrawlPrompt p, Sampling sampling, CancellationToken ct)
    {
        var url = new Uri(endpoint.ToString().TrimEnd('/') + (api == "completions" ? "/completions" : "/chat/completions"));
        var answer = await http.PostJsonAsync(url, Body(p, sampling), r =>
        {
            if (!string.IsNullOrEmpty(apiKey))
            {
                r.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
            }
        }, keyVariable, ct);
        Interlocked.Increment(ref _prompts);
        Interlocked.Add(ref _promptTokens, answer["usage"]?["prompt_tokens"]?.GetValue<long>() ?? 0);
        Interlocked.Add(ref _completionTokens, answer["usage"]?["completion_tokens"]?.GetValue<long>() ?? 0);
        var choice = answer["choices"]?[0];
        var text = api == "completions" ? choice?["text"] : choice?["message"]?["content"];
        if (text is not JsonValue v || !v.TryGetValue<string>(out var s))
        {
            throw new ActivityException($"{url}: a malformed response: expected {(api == "completions" ? "choices[0].text" : "choices[0].message.content")} to be a string");
        }
        return s;
    }

    public void Dispose() => http.Dispose();
}

/// <summary>
/// Anthropic's Messages API: <c>POST {endpoint}/v1/messages</c> with <c>x-api-key</c> and <c>anthropic-version:
/// 2023-06-01</c>; the prefill is the final assistant message (trailing whitespace removed, which the API requires)
/// and the reply continues it.
/// </summary>
public sealed class AnthropicCrawlTarget(RemoteHttp http, Uri endpoint, string model, string? apiKey, string keyVariable) : ICrawlTarget
{
    public const string Version = "2023-06-01";
    private long _prompts, _promptTokens, _completionTokens;

    public string Name => $"anthropic {model} at {endpoint.GetLeftPart(UriPartial.Authority)}";

    public TargetUsage Usage => new(Interlocked.Read(ref _prompts), http.Requests, http.Retries, Interlocked.Read(ref _promptTokens), Interlocked.Read(ref _completionTokens));

    public async Task<IReadOnlyList<string>> CompleteAsync(IReadOnlyList<CrawlPrompt> prompts, Sampling sampling, CancellationToken ct) =>
        await Task.WhenAll(prompts.Select(p => One(p, sampling, ct)));

    /// <summary>The request body for one prompt.</summary>
    public JsonObject Body(CrawlPrompt p, Sampling sampling)
    {
        var (messages, prefill, _) = ThoughtEmulation.Layout(p, reasoningTemplate: false);
        var body = new JsonObject { ["model"] = model, ["max_tokens"] = sampling.MaxTokens, ["temperature"] = Math.Min(1.0, sampling.Temperature) };
        if (messages.FirstOrDefault(m => m.Role == "system") is { } system)
        {
            body["system"] = system.Content;
        }
        var list = new JsonArray(messages.Where(m => m.Role != "system").Select(m => (JsonNode)new JsonObject { ["role"] = m.Role, ["content"] = m.Content }).ToArray());
        if (prefill.TrimEnd().Length > 0)
        {
            list.Add(new JsonObject { ["role"] = "assistant", ["content"] = prefill.TrimEnd() });
        }
        body["messages"] = list;
        return body;
    }

    private async Task<string> One(CrawlPrompt p, Sampling sampling, CancellationToken ct)
    {
        var url = new Uri(endpoint.ToString().TrimEnd('/') + "/v1/messages");
        var answer = await http.PostJsonAsync(url, Body(p, sampling), r =>
        {
            if (!string.IsNullOrEmpty(apiKey))
            {
                r.Headers.Add("x-api-key", apiKey);
            }
            r.Headers.Add("anthropic-version", Version);
        }, keyVariable, ct);
        Interlocked.Increment(ref _prompts);
        Interlocked.Add(ref _promptTokens, answer["usage"]?["input_tokens"]?.GetValue<long>() ?? 0);
        Interlocked.Add(ref _completionTokens, answer["usage"]?["output_tokens"]?.GetValue<long>() ?? 0);
        if (answer["content"] is not JsonArray content)
        {
            throw new ActivityException($"{url}: a malformed response: expected a \"content\" array");
        }
        var text = string.Concat(content.Where(b => b?["type"]?.GetValue<string>() == "text").Select(b => b!["text"]?.GetValue<string>() ?? ""));
        // The API strips the prefill's trailing whitespace; restore the separator the continuation expects.
        var trimmed = p.Prefill.Length - p.Prefill.TrimEnd().Length;
        return trimmed > 0 && !text.StartsWith(' ') && !text.StartsWith('\n') ? " " + text : text;
    }

    public void Dispose() => http.Dispose();
}
