using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Crawl;

/// <summary>
/// The Topics artifact: <c>topics.jsonl</c>, one <see cref="Topic"/> a line in id order; and its companion
/// <c>stats.json</c> (format <c>pipelines.crawl-stats/1</c>: settings, per-step counts, usage, how it ended).
/// </summary>
public static class TopicsFile
{
    public const string StatsFormat = "pipelines.crawl-stats/1";

    public static void Write(string path, IEnumerable<Topic> topics)
    {
        using var writer = new StreamWriter(path) { NewLine = "\n" };
        foreach (var t in topics)
        {
            writer.WriteLine(JsonSerializer.Serialize(t, Crawler.Json));
        }
    }

    /// <summary>Reads a topics file; a bad line fails with its number.</summary>
    public static List<Topic> Read(string path, string label)
    {
        var topics = new List<Topic>();
        var n = 0;
        foreach (var line in File.ReadLines(path))
        {
            n++;
            if (line.Length == 0)
            {
                continue;
            }
            try
            {
                topics.Add(JsonSerializer.Deserialize<Topic>(line, Crawler.Json) ?? throw new JsonException("null"));
            }
            catch (JsonException e)
            {
                throw new ActivityException($"{label}, line {n}: not a topic ({e.Message.Split('.')[0]})");
            }
        }
        return topics;
    }

    /// <summary>The stats document of a finished crawl.</summary>
    public static JsonObject Stats(CrawlState state, CrawlOptions options, string target, TargetUsage usage, string dedup, string? embedder)
    {
        var refused = state.Topics.Count(t => t.IsHead && t.IsRefused == true);
        return new JsonObject
        {
            ["format"] = StatsFormat,
            ["target"] = target,
            ["mode"] = JsonNamingPolicy.KebabCaseLower.ConvertName(options.Mode.ToString()),
            ["seeded"] = options.UseSeeds,
            ["finished"] = state.Finished,
            ["steps"] = state.Step + 1,
            ["topics"] = state.Topics.Count,
            ["heads"] = state.Topics.Count(t => t.IsHead),
            ["refusedHeads"] = refused,
            ["prompts"] = state.Prompts,
            ["seconds"] = Math.Round(state.Seconds, 2),
            ["usage"] = new JsonObject
            {
                ["prompts"] = usage.Prompts, ["requests"] = usage.Requests, ["retries"] = usage.Retries,
                ["promptTokens"] = usage.PromptTokens, ["completionTokens"] = usage.CompletionTokens,
            },
            ["dedup"] = dedup,
            ["embedder"] = embedder,
            ["refusal"] = new JsonObject
            {
                ["samples"] = options.RefusalSamples, ["threshold"] = options.RefusalThreshold, ["rule"] = "refused when the refused fraction of k probes is > threshold",
                ["patterns"] = new JsonArray(RefusalPatterns.All.Select(p => (JsonNode)p).ToArray()),
            },
            ["budget"] = new JsonObject
            {
                ["maxPrompts"] = options.MaxPrompts == long.MaxValue ? null : options.MaxPrompts, ["maxTopics"] = options.MaxTopics,
                ["rule"] = "every prompt sent to the target counts one: crawl generations and refusal-check queries and answers alike",
            },
            ["perStep"] = JsonSerializer.SerializeToNode(state.Stats, Crawler.Json),
        };
    }
}
