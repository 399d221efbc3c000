using System.Text.Json;
using FluentValidation;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Crawl;

/// <summary>The prompt sets a crawl uses.</summary>
public enum CrawlLanguages { Both, English, Chinese }

/// <summary>Refusal discovery with the iterated prefill crawler (research §A): the topics a chat model refuses.</summary>
[Activity("crawl.expand", Version = 1, Category = "Crawl", Resources = ["gpu"], Summary = "Discover the topics a chat model refuses with the prefill crawler (local model, OpenAI-compatible server or Anthropic)")]
[Output("topics", ArtifactKinds.Topics, Help = "topics.jsonl: every topic found (id, parentId, step, text, normalized, language, isHead, clusterId, isRefused, refusalRate, prompts, samples)", MediaType = "application/x-ndjson", FileName = "topics.jsonl")]
[Output("stats", ArtifactKinds.Json, Help = "Per-step counts, budget, usage (requests, tokens), settings and how the crawl ended", MediaType = "application/json", FileName = "stats.json")]
public sealed class CrawlExpandActivity : Activity<CrawlExpandActivity.Input>
{
    public sealed record Input
    {
        [Input("local (a Model through our runtime), openai (an OpenAI-compatible server) or anthropic (the Messages API)")]
        public TargetBackend Backend { get; init; } = TargetBackend.Local;

        [Input("The target for the local backend (and the hidden-state embedder)", Kind = ArtifactKinds.Model)]
        public Artifact? Model { get; init; }

        [Input("Chat template: llama3, llama2, qwen2, deepseek-r1 or plain (local, and openai with api completions; default from the architecture)")]
        public string Template { get; init; } = "";

        [Input("Remote: base URL (openai: http://host:8000/v1; anthropic: https://api.anthropic.com)")]
        public string Endpoint { get; init; } = "";

        [Input("Remote: the server's model name")]
        public string RemoteModel { get; init; } = "";

        [Input("Remote: the environment variable holding the key (allow-listed names only; default OPENAI_API_KEY, or ANTHROPIC_API_KEY for anthropic)")]
        public string ApiKeyVariable { get; init; } = "";

        [Input("openai: chat (prefill via continue_final_message) or completions (prompt built with the template)")]
        public RemoteApi Api { get; init; } = RemoteApi.Chat;

        [Input("Remote: requests in flight at most", Minimum = 1, Maximum = 64)]
        public int Concurrency { get; init; } = 4;

        [Input("Where the prefill goes: assistant-prefix, thought-prefix, thought-suffix, user-suffix, or user-all (the unseeded direct-prompting baseline)")]
        public InjectionMode Mode { get; init; } = InjectionMode.AssistantPrefix;

        [Input("Crawl steps", Minimum = 1, Maximum = 1_000_000)]
        public int Steps { get; init; } = 1000;

        [Input("Unseeded warm-up steps (the paper: one per prefill phrase)", Minimum = 0, Maximum = 1000)]
        public int WarmupSteps { get; init; } = 21;

        [Input("Seeds per step, drawn uniformly from the refused heads", Minimum = 1, Maximum = 1000)]
        public int SeedsPerStep { get; init; } = 2;

        [Input("Samples per prompt", Minimum = 1, Maximum = 100)]
        public int SamplesPerPrompt { get; init; } = 1;

        [Input("Prompt languages: both (the paper's English and Chinese sets), english or chinese")]
        public CrawlLanguages Languages { get; init; } = CrawlLanguages.Both;

        [Input("Sampling temperature of crawl generations", Minimum = 0, Maximum = 2)]
        public double Temperature { get; init; } = 0.6;

        [Input("New tokens per crawl generation", Minimum = 1, Maximum = 8192)]
        public int MaxNewTokens { get; init; } = 100;

        [Input("Items kept per generation", Minimum = 1, Maximum = 100)]
        public int MaxTopicsPerGeneration { get; init; } = 10;

        [Input("exact (normalised text) or embedding (cosine to the head topics)")]
        public DedupMode Dedup { get; init; } = DedupMode.Embedding;

        [Input("embedding dedup: minilm (all-MiniLM-L6-v2, offline), openai (/embeddings) or hidden (the local model's mean-pooled states)")]
        public EmbedderKind Embedder { get; init; } = EmbedderKind.Minilm;

        [Input("embedding dedup: a topic is a duplicate at cosine ≥ this (0: the calibrated MiniLM value)", Minimum = 0, Maximum = 1)]
        public double EmbeddingThreshold { get; init; }

        [Input("openai embedder: base URL (default: endpoint)")]
        public string EmbeddingEndpoint { get; init; } = "";

        [Input("openai embedder: model name (default text-embedding-3-small)")]
        public string EmbeddingModel { get; init; } = "";

        [Input("Refusal check: probes per topic (k)", Minimum = 1, Maximum = 100)]
        public int RefusalSamples { get; init; } = 6;

        [Input("Refusal check: refused when the refused fraction of the k probes is above this (strict)", Minimum = 0, Maximum = 1)]
        public double RefusalThreshold { get; init; } = 0.5;

        [Input("Refusal check: new tokens per written request and per answer", Minimum = 1, Maximum = 8192)]
        public int RefusalTokens { get; init; } = 100;

        [Input("Refusal check: an LLM judge after the patterns, through an OpenAI-compatible endpoint (empty: patterns only)")]
        public string JudgeEndpoint { get; init; } = "";

        [Input("Refusal check: the judge's model name")]
        public string JudgeModel { get; init; } = "";

        [Input("Budget: prompts sent to the target, crawl and refusal checks alike (0: unlimited)", Minimum = 0)]
        public long MaxPrompts { get; init; }

        [Input("Budget: topic ids (every topic extracted, duplicates included)", Minimum = 1)]
        public int MaxTopics { get; init; } = 1000;

        [Input("Local backend: prompts generated together", Minimum = 1, Maximum = 1024)]
        public int BatchSize { get; init; } = 32;

        [Input("Seed of seed sampling, template choice and local sampling")]
        public long Seed { get; init; }

        [Input("Save the crawl state every N steps (a killed crawl resumes from it)", Minimum = 1)]
        public int SaveEvery { get; init; } = 2;
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Template).Must(t => t.Length == 0 || Pipelines.Models.Tokenizers.ChatTemplates.Families.Contains(t))
                .WithMessage($"expected one of: {string.Join(", ", Pipelines.Models.Tokenizers.ChatTemplates.Families)}");
            RuleFor(i => i.Endpoint).Must(e => e.Length == 0 || RemoteEndpoints.CheckEndpoint(e) is null).WithMessage(i => RemoteEndpoints.CheckEndpoint(i.Endpoint)!);
            RuleFor(i => i.ApiKeyVariable).Must(v => v.Length == 0 || RemoteEndpoints.CheckKeyVariable(v) is null).WithMessage(i => RemoteEndpoints.CheckKeyVariable(i.ApiKeyVariable)!);
            RuleFor(i => i.Endpoint).NotEmpty().When(i => i.Backend != TargetBackend.Local).WithMessage("a remote backend needs an endpoint");
            RuleFor(i => i.JudgeEndpoint).Must(e => e.Length == 0 || RemoteEndpoints.CheckEndpoint(e) is null).WithMessage(i => RemoteEndpoints.CheckEndpoint(i.JudgeEndpoint)!);
            RuleFor(i => i.JudgeModel).NotEmpty().When(i => i.JudgeEndpoint.Length > 0).WithMessage("the judge needs a model name");
            RuleFor(i => i.RemoteModel).NotEmpty().When(i => i.Backend != TargetBackend.Local).WithMessage("a remote backend needs the server's model name");
        }
    }

    protected override async Task ExecuteAsync(Input input, ActivityContext context)
    {
        var ct = context.CancellationToken;
        var (target, lease) = CrawlSetup.Target(input, ct);
        using var _ = lease;
        using var __ = target;
        using var embedder = CrawlSetup.Embedder(input, lease, ct);
        var options = Options(input);
        var threshold = input.EmbeddingThreshold > 0 ? input.EmbeddingThreshold : CrawlSetup.MiniLmThreshold;
        using var judgeTarget = input.JudgeEndpoint.Length == 0 ? null : CrawlSetup.Judge(input);
        var refusal = new RefusalChecker(target, options.RefusalSamples, options.RefusalThreshold, options.QueryTokens, options.AnswerTokens, options.RefusalTemperature,
            judgeTarget is null ? null : new ChatRefusalJudge(judgeTarget));
        var crawler = new Crawler(target, options, new TopicDeduplicator(input.Dedup, threshold), embedder, refusal)
        {
            OnStep = s => context.Report((double)(s.Step + 1) / options.Steps,
                $"step {s.Step + 1}: {s.Topics.Count} topics, {s.Topics.Count(t => t.IsHead && t.IsRefused == true)} refused heads, {s.Prompts} prompts"),
        };
        var state = await crawler.RunAsync(context.ResumeDirectory, ct);
        TopicsFile.Write(context.OutputFile("topics"), state.Topics);
        var dedup = input.Dedup == DedupMode.Exact ? "exact" : $"embedding, cosine ≥ {threshold}";
        var stats = TopicsFile.Stats(state, options, target.Name, target.Usage, dedup, embedder?.Name);
        File.WriteAllText(context.OutputFile("stats"), stats.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"{state.Topics.Count} topics, {stats["heads"]} heads, {stats["refusedHeads"]} refused, {state.Prompts} prompts; {state.Finished}");
    }

    private static CrawlOptions Options(Input input) => new()
    {
        Mode = input.Mode, UseSeeds = input.Mode != InjectionMode.UserAll, Steps = input.Steps, WarmupSteps = input.WarmupSteps,
        SeedsPerStep = input.SeedsPerStep, SamplesPerPrompt = input.SamplesPerPrompt,
        Languages = input.Languages switch { CrawlLanguages.English => [CrawlPrompts.English], CrawlLanguages.Chinese => [CrawlPrompts.Chinese], _ => CrawlPrompts.Languages },
        Temperature = input.Temperature,
        MaxNewTokens = input.MaxNewTokens, MaxTopicsPerGeneration = input.MaxTopicsPerGeneration, RefusalSamples = input.RefusalSamples,
        RefusalThreshold = input.RefusalThreshold, QueryTokens = input.RefusalTokens, AnswerTokens = input.RefusalTokens,
        MaxPrompts = input.MaxPrompts == 0 ? long.MaxValue : input.MaxPrompts, MaxTopics = input.MaxTopics, Seed = input.Seed, SaveEvery = input.SaveEvery,
    };
}
