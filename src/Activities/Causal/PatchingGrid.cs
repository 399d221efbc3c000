using System.Text.Json;
using System.Text.Json.Serialization;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>
/// A patching sweep's result (grid.json, format <c>pipelines.patching-grid/1</c>): per layer and position (or head),
/// <see cref="Raw"/> = the metric under the patch averaged over pairs, and <see cref="Values"/> = (mean m(patched) −
/// mean m(corrupted)) / (mean m(clean) − mean m(corrupted)), averaged first and then normalised, in both directions.
/// </summary>
public sealed record PatchingGrid
{
    public const string FormatName = "pipelines.patching-grid/1";

    public string Format { get; init; } = FormatName;
    public required string Metric { get; init; }
    public required string Direction { get; init; }
    public required string Hook { get; init; }
    public required IReadOnlyList<int> Layers { get; init; }
    public required IReadOnlyList<string> Positions { get; init; }
    public required IReadOnlyList<IReadOnlyList<double?>> Values { get; init; }
    public required IReadOnlyList<IReadOnlyList<double>> Raw { get; init; }
    public required double Clean { get; init; }
    public required double Corrupted { get; init; }
    public required int Pairs { get; init; }
    public string Normalisation { get; init; } = "(mean m(patched) - mean m(corrupted)) / (mean m(clean) - mean m(corrupted)); 1 = the clean metric, 0 = the corrupted one";
    public bool HigherIsBetter { get; init; } = true;
    public int Dropped { get; init; }
    public string? Warning { get; init; }

    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public void Write(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Options) + "\n");

    public static PatchingGrid Read(string path, string name = "grid")
    {
        try
        {
            var grid = JsonSerializer.Deserialize<PatchingGrid>(File.ReadAllText(path), Options) ?? throw new JsonException("null");
            return grid.Format == FormatName ? grid : throw new ActivityException($"{name}: expected format \"{FormatName}\", got \"{grid.Format}\"");
        }
        catch (JsonException e)
        {
            throw new ActivityException($"{name}: not a patching grid ({e.Path}: {e.Message.Split('.')[0]})");
        }
    }
}
