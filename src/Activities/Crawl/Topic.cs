using System.Text.Json.Serialization;

namespace Pipelines.Activities.Crawl;

/// <summary>One refusal-check probe: the request written for the topic and the target's answer to it.</summary>
public sealed record RefusalSample(
    [property: JsonPropertyName("query")] string Query,
    [property: JsonPropertyName("answer")] string? Answer,
    [property: JsonPropertyName("refused")] bool Refused,
    [property: JsonPropertyName("pattern")] string? Pattern,
    [property: JsonPropertyName("stage")] string Stage);

/// <summary>
/// One discovered topic, a line of <c>topics.jsonl</c> (the Topics artifact). <c>Id</c> counts every topic extracted,
/// duplicates included (the paper's x-axis); <c>ParentId</c> is the seed whose prompt produced it (-1: the initial seed
/// or an unseeded prompt); <c>Prompts</c> is the number of prompts sent to the target when it was found.
/// </summary>
public sealed class Topic
{
    [JsonPropertyName("id")] public int Id { get; init; }
    [JsonPropertyName("parentId")] public int ParentId { get; init; }
    [JsonPropertyName("step")] public int Step { get; init; }
    [JsonPropertyName("text")] public required string Text { get; init; }
    [JsonPropertyName("normalized")] public required string Normalized { get; init; }
    [JsonPropertyName("language")] public required string Language { get; init; }
    [JsonPropertyName("isHead")] public bool IsHead { get; set; }
    [JsonPropertyName("clusterId")] public int ClusterId { get; set; }
    [JsonPropertyName("similarity")] public double Similarity { get; set; }
    [JsonPropertyName("isRefused")] public bool? IsRefused { get; set; }
    [JsonPropertyName("refusalRate")] public double? RefusalRate { get; set; }
    [JsonPropertyName("prompts")] public long Prompts { get; set; }
    [JsonPropertyName("samples")] public List<RefusalSample> Samples { get; set; } = [];
}

/// <summary>Counts after one crawl step (a line of <c>stats.json</c>'s <c>steps</c>).</summary>
public sealed record StepStats(
    [property: JsonPropertyName("step")] int Step,
    [property: JsonPropertyName("seeds")] int Seeds,
    [property: JsonPropertyName("topics")] int Topics,
    [property: JsonPropertyName("newTopics")] int NewTopics,
    [property: JsonPropertyName("heads")] int Heads,
    [property: JsonPropertyName("refusedHeads")] int RefusedHeads,
    [property: JsonPropertyName("prompts")] long Prompts,
    [property: JsonPropertyName("seconds")] double Seconds);
