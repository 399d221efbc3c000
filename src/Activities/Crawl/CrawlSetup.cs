using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Activities.Crawl;

/// <summary>Which model a crawl interrogates.</summary>
public enum TargetBackend { Local, Openai, Anthropic }

/// <summary>How topics are embedded for deduplication.</summary>
public enum EmbedderKind { Minilm, Openai, Hidden }

/// <summary>Opens a crawl's target and embedder from its activity inputs (keys from allow-listed variables only).</summary>
public static class CrawlSetup
{
    /// <summary>
    /// The MiniLM dedup threshold, calibrated on datasets/topic-pairs: duplicates score 0.452..0.984, distinct pairs
    /// -0.028..0.313; every threshold in 0.32..0.45 classifies all 70 pairs right, and 0.38 is the middle of the gap.
    /// </summary>
    public const double MiniLmThreshold = 0.38;

    public static string KeyVariable(TargetBackend backend, string requested) =>
        requested.Length > 0 ? requested : backend == TargetBackend.Anthropic ? "ANTHROPIC_API_KEY" : "OPENAI_API_KEY";

    public static string? Key(string variable)
    {
        if (RemoteEndpoints.CheckKeyVariable(variable) is { } refused)
        {
            throw new ActivityException($"inputs.apiKeyVariable: {refused}");
        }
        return Environment.GetEnvironmentVariable(variable);
    }

    public static Uri Endpoint(string endpoint, string port)
    {
        if (endpoint.Length == 0)
        {
            throw new ActivityException($"inputs.{port}: a remote backend needs an endpoint (a base URL such as http://127.0.0.1:8000/v1)");
        }
        if (RemoteEndpoints.CheckEndpoint(endpoint) is { } refused)
        {
            throw new ActivityException($"inputs.{port}: {refused}");
        }
        return new Uri(endpoint);
    }

    public static RemoteHttp Http(int concurrency) => new(new HttpClient { Timeout = TimeSpan.FromMinutes(5) }, concurrency);

    /// <summary>The target and the model lease it holds (local), to dispose after the crawl.</summary>
    public static (ICrawlTarget Target, IDisposable? Lease) Target(CrawlExpandActivity.Input input, CancellationToken ct)
    {
        var variable = KeyVariable(input.Backend, input.ApiKeyVariable);
        switch (input.Backend)
        {
            case TargetBackend.Local:
                var artifact = input.Model ?? throw new ActivityException("inputs.model: the local backend needs a Model (connect model.load or model.train-toy)");
                var lease = ModelCache.Shared.Acquire(artifact, ct);
                var template = input.Template.Length > 0 ? input.Template : ChatTemplates.ForArchitecture(lease.Model.Config.Architecture);
                return (new LocalCrawlTarget(lease.Model, lease.Tokenizer, template, artifact.Digest[..12], input.BatchSize), lease);
            case TargetBackend.Openai:
                return (new OpenAiCrawlTarget(Http(input.Concurrency), Endpoint(input.Endpoint, "endpoint"), Remote(input), Key(variable), variable,
                    input.Api == RemoteApi.Completions ? "completions" : "chat", input.Template.Length > 0 ? input.Template : "plain"), null);
            default:
                return (new AnthropicCrawlTarget(Http(input.Concurrency), Endpoint(input.Endpoint, "endpoint"), Remote(input), Key(variable), variable), null);
        }
    }

    /// <summary>The refusal judge: an OpenAI-compatible chat endpoint, its key from the same allow-listed variable.</summary>
    public static ICrawlTarget Judge(CrawlExpandActivity.Input input)
    {
        var variable = KeyVariable(TargetBackend.Openai, input.Backend == TargetBackend.Openai ? input.ApiKeyVariable : "");
        return new OpenAiCrawlTarget(Http(input.Concurrency), Endpoint(input.JudgeEndpoint, "judgeEndpoint"), input.JudgeModel, Key(variable), variable, "chat", "plain");
    }

    private static string Remote(CrawlExpandActivity.Input input) => input.RemoteModel.Length > 0 ? input.RemoteModel
        : throw new ActivityException("inputs.remoteModel: a remote backend needs the server's model name");

    /// <summary>The dedup embedder; the hidden-state one reuses the local target's lease (a model is lent to one user at a time).</summary>
    public static IEmbedder? Embedder(CrawlExpandActivity.Input input, IDisposable? targetLease, CancellationToken ct)
    {
        if (input.Dedup == DedupMode.Exact)
        {
            return null;
        }
        switch (input.Embedder)
        {
            case EmbedderKind.Minilm:
                return new MiniLmEmbedder();
            case EmbedderKind.Openai:
                var variable = KeyVariable(TargetBackend.Openai, input.ApiKeyVariable);
                var endpoint = input.EmbeddingEndpoint.Length > 0 ? input.EmbeddingEndpoint : input.Endpoint;
                return new OpenAiEmbedder(Http(input.Concurrency), Endpoint(endpoint, "embeddingEndpoint"),
                    input.EmbeddingModel.Length > 0 ? input.EmbeddingModel : "text-embedding-3-small", Key(variable), variable);
            default:
                var artifact = input.Model ?? throw new ActivityException("inputs.model: the hidden-state embedder needs a Model");
                if (targetLease is ModelLease shared)
                {
                    return new HiddenStateEmbedder(shared.Model, shared.Tokenizer, artifact.Digest[..12]);
                }
                var lease = ModelCache.Shared.Acquire(artifact, ct);
                return new LeasedEmbedder(new HiddenStateEmbedder(lease.Model, lease.Tokenizer, artifact.Digest[..12]), lease);
        }
    }

    private sealed class LeasedEmbedder(IEmbedder inner, IDisposable lease) : IEmbedder
    {
        public string Name => inner.Name;

        public IReadOnlyList<float[]> Embed(IReadOnlyList<string> texts, CancellationToken ct) => inner.Embed(texts, ct);

        public void Dispose()
        {
            inner.Dispose();
            lease.Dispose();
        }
    }
}

/// <summary>An OpenAI-compatible server's API: chat completions with continue_final_message, or raw completions.</summary>
public enum RemoteApi { Chat, Completions }
