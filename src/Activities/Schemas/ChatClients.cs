using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Models.Generation;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;

namespace Pipelines.Activities.Schemas;

/// <summary>A chat model the schema generator prompts: one completion per call.</summary>
public interface IChatClient
{
    /// <summary>What answered, for the report (endpoint and model, or the local checkpoint).</summary>
    string Name { get; }

    Task<string> CompleteAsync(IReadOnlyList<ChatMessage> messages, CancellationToken cancellationToken);
}

/// <summary>
/// An OpenAI-compatible <c>/chat/completions</c> endpoint (OpenAI, vLLM, llama.cpp's server, Ollama, LiteLLM, ...):
/// temperature 0, <c>max_tokens</c> 1000 as in the paper. Rate limits and server errors (429, 5xx) are retried
/// three times with backoff; anything else fails with the status and the start of the body.
/// </summary>
public sealed class OpenAiChatClient(HttpClient http, Uri baseAddress, string model, string? apiKey, int maxTokens = 1000) : IChatClient
{
    public string Name => $"{model} at {baseAddress}";

    public async Task<string> CompleteAsync(IReadOnlyList<ChatMessage> messages, CancellationToken cancellationToken)
    {
        var body = new JsonObject
        {
            ["model"] = model,
            ["temperature"] = 0,
            ["max_tokens"] = maxTokens,
            ["messages"] = new JsonArray(messages.Select(m => (JsonNode)new JsonObject { ["role"] = m.Role, ["content"] = m.Content }).ToArray()),
        };
        var url = new Uri(baseAddress.ToString().TrimEnd('/') + "/chat/completions");
        for (var attempt = 1; ; attempt++)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
            if (!string.IsNullOrEmpty(apiKey))
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
            }
            HttpResponseMessage response;
            try
            {
                response = await http.SendAsync(request, cancellationToken);
            }
            catch (HttpRequestException e)
            {
                throw new ActivityException($"LLM endpoint {url}: {e.Message}");
            }
            using (response)
            {
                var text = await response.Content.ReadAsStringAsync(cancellationToken);
                var status = (int)response.StatusCode;
                if ((status == 429 || status >= 500) && attempt < 3)
                {
                    await Task.Delay(TimeSpan.FromSeconds(attempt), cancellationToken);
                    continue;
                }
                if (!response.IsSuccessStatusCode)
                {
                    throw new ActivityException($"LLM endpoint {url}: HTTP {status}: {text[..Math.Min(300, text.Length)]}");
                }
                try
                {
                    return JsonNode.Parse(text)?["choices"]?[0]?["message"]?["content"]?.GetValue<string>()
                        ?? throw new FormatException("no choices[0].message.content");
                }
                catch (Exception e) when (e is System.Text.Json.JsonException or FormatException or InvalidOperationException)
                {
                    throw new ActivityException($"LLM endpoint {url}: not an OpenAI chat completion ({e.Message})");
                }
            }
        }
    }
}

/// <summary>One of our own checkpoints as the chat model, through its chat template and greedy decoding.</summary>
public sealed class LocalChatClient(HookedTransformer model, ITextTokenizer tokenizer, string template, string name, int maxNewTokens = 1000) : IChatClient
{
    public string Name => $"local {name} ({template} template)";

    public Task<string> CompleteAsync(IReadOnlyList<ChatMessage> messages, CancellationToken cancellationToken)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var prompt = ChatTemplates.Format(template, messages);
        try
        {
            var generated = new TextGenerator(model, tokenizer).Generate([prompt], new GenerationOptions { MaxNewTokens = maxNewTokens });
            return Task.FromResult(generated[0].Text);
        }
        catch (ArgumentException e)
        {
            throw new ActivityException($"the local assistant {name}: {e.Message}");
        }
    }
}
