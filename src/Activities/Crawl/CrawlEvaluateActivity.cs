using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Activities.Crawl;

/// <summary>Evaluates a crawl against a ground-truth list, optionally against a second crawl, with Elo self-ranking.</summary>
[Activity("crawl.evaluate", Version = 1, Category = "Crawl", Summary = "Recall, precision and time to discovery of a crawl against a ground-truth list; diff of two crawls; Elo self-ranking; thought suppression")]
[Output("evaluation", ArtifactKinds.Json, Help = "evaluation.json: match method, recall, recall against topic ids and prompts, precision curve, per-topic discovery, diff, suppression, Elo", MediaType = "application/json", FileName = "evaluation.json")]
public sealed class CrawlEvaluateActivity : Activity<CrawlEvaluateActivity.Input>
{
    public sealed record Input
    {
        [Input("The crawl to evaluate (from crawl.expand)", Kind = ArtifactKinds.Topics)]
        public required Artifact Topics { get; init; }

        [Input("Ground truth: {\"topics\": [{\"topic\", \"aliases\"?, \"keywords\"?, \"category\"?}]} (crawl.toy-world writes one)", Kind = ArtifactKinds.Json)]
        public required Artifact GroundTruth { get; init; }

        [Input("A second crawl to diff against (e.g. the int8 model's, or the baseline)", Kind = ArtifactKinds.Topics)]
        public Artifact? Other { get; init; }

        [Input("keywords (whole words, case-insensitive), embedding (MiniLM cosine) or judge (an LLM through an OpenAI-compatible endpoint)")]
        public MatchMethod Match { get; init; } = MatchMethod.Keywords;

        [Input("embedding: cosine threshold (0: the calibrated MiniLM value)", Minimum = 0, Maximum = 1)]
        public double EmbeddingThreshold { get; init; }

        [Input("judge: base URL of an OpenAI-compatible API")]
        public string JudgeEndpoint { get; init; } = "";

        [Input("judge: the model name")]
        public string JudgeModel { get; init; } = "";

        [Input("judge: the environment variable holding its key (allow-listed names only)")]
        public string ApiKeyVariable { get; init; } = "OPENAI_API_KEY";

        [Input("Elo self-ranking through this local model (the crawled one): 0 comparisons skips it", Kind = ArtifactKinds.Model)]
        public Artifact? Model { get; init; }

        [Input("Elo: pairwise comparisons (the paper: 5000)", Minimum = 0, Maximum = 100_000)]
        public int EloComparisons { get; init; }

        [Input("Elo: the model's chat template (default from its architecture)")]
        public string Template { get; init; } = "";

        [Input("Seed of the Elo pairing")]
        public long Seed { get; init; }
    }

    protected override async Task ExecuteAsync(Input input, ActivityContext context)
    {
        var ct = context.CancellationToken;
        var topics = TopicsFile.Read(input.Topics.Path, "topics");
        var truth = GroundTruthTopic.Read(input.GroundTruth.Path, "groundTruth");
        var (matcher, owned) = Matcher(input);
        using var _ = owned;
        var evaluation = await CrawlEvaluation.EvaluateAsync(topics, truth, matcher, ct);
        evaluation["thoughtSuppression"] = CrawlEvaluation.ThoughtSuppression(topics);
        if (input.Other is { } other)
        {
            evaluation["diff"] = await CrawlEvaluation.DiffAsync(topics, TopicsFile.Read(other.Path, "other"), matcher, ct);
        }
        if (input.EloComparisons > 0)
        {
            evaluation["elo"] = await Elo(input, topics, evaluation, ct);
        }
        File.WriteAllText(context.OutputFile("evaluation"), evaluation.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
        context.Log($"recall {evaluation["found"]}/{evaluation["groundTruth"]} ({matcher.Name}), precision {evaluation["precision"]}");
    }

    private static (ITopicMatcher, IDisposable?) Matcher(Input input)
    {
        switch (input.Match)
        {
            case MatchMethod.Keywords:
                return (new KeywordMatcher(), null);
            case MatchMethod.Embedding:
                var embedder = new MiniLmEmbedder();
                return (new EmbeddingMatcher(embedder, input.EmbeddingThreshold > 0 ? input.EmbeddingThreshold : CrawlSetup.MiniLmThreshold), embedder);
            default:
                var judge = new OpenAiCrawlTarget(CrawlSetup.Http(4), CrawlSetup.Endpoint(input.JudgeEndpoint, "judgeEndpoint"),
                    input.JudgeModel.Length > 0 ? input.JudgeModel : throw new ActivityException("inputs.judgeModel: the judge needs a model name"),
                    CrawlSetup.Key(input.ApiKeyVariable), input.ApiKeyVariable, "chat", "plain");
                return (new JudgeMatcher(judge), judge);
        }
    }

    private static async Task<JsonObject> Elo(Input input, List<Topic> topics, JsonObject evaluation, CancellationToken ct)
    {
        var artifact = input.Model ?? throw new ActivityException("inputs.model: Elo self-ranking needs the crawled model");
        using var lease = ModelCache.Shared.Acquire(artifact, ct);
        var template = input.Template.Length > 0 ? input.Template : ChatTemplates.ForArchitecture(lease.Model.Config.Architecture);
        using var target = new LocalCrawlTarget(lease.Model, lease.Tokenizer, template, artifact.Digest[..12]);
        var refused = topics.Where(t => t.IsHead && t.IsRefused == true).Select(t => t.Normalized).ToList();
        var (ratings, done, unparsed) = await EloRanking.RankAsync(target, refused, input.EloComparisons, input.Seed, ct);
        var ranked = ratings.OrderByDescending(r => r.Value).Select(r => r.Key).ToList();
        var matched = evaluation["topics"]!.AsArray().SelectMany(t => t!["matched"]!.AsArray().Select(m => m!.GetValue<string>())).ToHashSet();
        return new JsonObject
        {
            ["comparisons"] = done, ["unparsed"] = unparsed,
            ["ranking"] = new JsonArray(ranked.Select(t => (JsonNode)new JsonObject { ["topic"] = t, ["elo"] = Math.Round(ratings[t], 1), ["matched"] = matched.Contains(t) }).ToArray()),
            ["roc"] = EloRanking.Roc(ranked, matched),
        };
    }
}
