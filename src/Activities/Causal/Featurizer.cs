using System.Text.Json;
using System.Text.Json.Serialization;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using static TorchSharp.torch;

namespace Pipelines.Activities.Causal;

/// <summary>Featurizer kinds (research/causal.md §2.4): the full vector, DAS, Boundless DAS, DBM over neurons, and PCA components with a DBM mask.</summary>
public enum FeaturizerKind { Identity, Das, Boundless, Dbm, Pca }

/// <summary>
/// One unit's featurizer: an orthonormal basis W [d, k] (none for the identity) and the feature indices swapped (null:
/// all k). An interchange sets x' = x_b + (x_s − x_b)·W_S·W_Sᵀ: the features in S from the source, the rest of x from the base.
/// </summary>
public sealed record FeaturizerUnit(int Layer, string Position, int K, IReadOnlyList<int>? Indices, double? OrthogonalityError)
{
    [JsonIgnore]
    public Tensor? W { get; init; }

    /// <summary>W restricted to the swapped features, or null for a full-vector interchange.</summary>
    public Tensor? Basis() => W is null ? null : Indices is null ? W : W.index_select(1, tensor(Indices.Select(i => (long)i).ToArray(), device: W.device));
}

/// <summary>
/// A Featurizer artifact (a folder): <c>featurizer.json</c> (format <c>pipelines.featurizer/1</c>: kind, hook, d,
/// variable and one entry per unit) and <c>featurizer.safetensors</c> (<c>L{layer}.{position}.W</c> [d, k]). This is
/// how a featurizer trained elsewhere is handed to causal.iia: MIB's <c>rotation_matrix</c> is W.
/// </summary>
public sealed record Featurizer : IDisposable
{
    public const string FormatName = "pipelines.featurizer/1";

    public string Format { get; init; } = FormatName;
    public required FeaturizerKind Kind { get; init; }
    public required string Hook { get; init; }
    public required int D { get; init; }
    public string? Variable { get; init; }
    public required IReadOnlyList<FeaturizerUnit> Units { get; init; }

    public FeaturizerUnit? Unit(int layer, string position) => Units.FirstOrDefault(u => u.Layer == layer && u.Position == position);

    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    public void Write(string directory)
    {
        Directory.CreateDirectory(directory);
        File.WriteAllText(Path.Combine(directory, "featurizer.json"), JsonSerializer.Serialize(this, Options) + "\n");
        SafetensorsFile.Write(Path.Combine(directory, "featurizer.safetensors"),
            Units.Where(u => u.W is not null).Select(u => ($"L{u.Layer}.{u.Position}.W", u.W!.to(ScalarType.Float32).cpu().contiguous())),
            new Dictionary<string, string> { ["pipelines"] = FormatName });
    }

    public static Featurizer Read(string directory, string name = "featurizer")
    {
        var manifest = Path.Combine(directory, "featurizer.json");
        if (!File.Exists(manifest))
        {
            throw new ActivityException($"{name}: no featurizer.json in the folder (a Featurizer is featurizer.json + featurizer.safetensors)");
        }
        Featurizer f;
        try
        {
            f = JsonSerializer.Deserialize<Featurizer>(File.ReadAllText(manifest), Options) ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new ActivityException($"{name}: featurizer.json is not a featurizer manifest ({e.Path}: {e.Message.Split('.')[0]})");
        }
        if (f.Format != FormatName)
        {
            throw new ActivityException($"{name}: expected format \"{FormatName}\", got \"{f.Format}\"");
        }
        if (f.Kind == FeaturizerKind.Identity)
        {
            return f;
        }
        var weights = Path.Combine(directory, "featurizer.safetensors");
        if (!File.Exists(weights))
        {
            throw new ActivityException($"{name}: no featurizer.safetensors beside featurizer.json");
        }
        SafetensorsFile file;
        try
        {
            file = SafetensorsFile.Open(weights);
        }
        catch (CheckpointException e)
        {
            throw new ActivityException($"{name}: featurizer.safetensors is unreadable ({e.Message.Split('\n')[0].Replace(directory, "…", StringComparison.Ordinal)})");
        }
        using var _ = file;
        var units = f.Units.Select(u =>
        {
            var key = $"L{u.Layer}.{u.Position}.W";
            if (!file.Entries.ContainsKey(key))
            {
                throw new ActivityException($"{name}: featurizer.safetensors has no tensor \"{key}\"");
            }
            var w = file.Read(key).to(ScalarType.Float32);
            if (w.dim() != 2 || w.shape[0] != f.D || w.shape[1] != u.K)
            {
                throw new ActivityException($"{name}: {key} is [{string.Join(", ", w.shape)}], expected [{f.D}, {u.K}]");
            }
            if (u.Indices?.FirstOrDefault(i => i < 0 || i >= u.K, -1) is var bad && bad is not null and not -1)
            {
                throw new ActivityException($"{name}: unit L{u.Layer}.{u.Position} has feature index {bad} outside 0..{u.K - 1}");
            }
            return u with { W = w };
        }).ToList();
        return f with { Units = units };
    }

    public void Dispose()
    {
        foreach (var u in Units)
        {
            u.W?.Dispose();
        }
    }
}
