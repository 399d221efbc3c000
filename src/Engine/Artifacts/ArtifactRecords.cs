using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Pipelines.Engine.Artifacts;

/// <summary>One output of a step as recorded in the cache and the ledger.</summary>
public sealed record OutputRecord(string Digest, string Kind, string MediaType, long Size, string FileName, bool IsDirectory);

/// <summary>A cache entry: the outputs a cache key produced, and where they came from.</summary>
public sealed record CacheEntry(
    string Key,
    string Activity,
    int Version,
    IReadOnlyDictionary<string, OutputRecord> Outputs,
    string RunId,
    string StepId,
    DateTimeOffset CreatedAt,
    double DurationMs);

/// <summary>A file inside a directory artifact.</summary>
public sealed record TreeFile(string Path, string Digest, long Size);

/// <summary>The manifest stored beside every object: what it is and how it was made (first producer).</summary>
public sealed record ObjectManifest
{
    public required string Digest { get; init; }
    public required string Kind { get; init; }
    public required string MediaType { get; init; }
    public required long Size { get; init; }
    public required string FileName { get; init; }
    public bool IsDirectory { get; init; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public IReadOnlyList<TreeFile>? Files { get; init; }
    public required string ProducerRunId { get; init; }
    public required string ProducerStepId { get; init; }
    public required string Activity { get; init; }
    public required int ActivityVersion { get; init; }
    public required string CacheKey { get; init; }
    public JsonObject? Inputs { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public double DurationMs { get; init; }
    public JsonObject? Environment { get; init; }
}
