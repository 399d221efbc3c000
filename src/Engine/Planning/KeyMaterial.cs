using System.Text.Json.Nodes;

namespace Pipelines.Engine.Planning;

/// <summary>
/// What a step's cache key is made of. The key is SHA-256 over the canonical JSON of this record, so a recorded
/// material explains the key (see <c>pipelines why</c>).
/// </summary>
/// <param name="Activity">Activity type name.</param>
/// <param name="Version">Activity version.</param>
/// <param name="Inputs">Every value input, defaults included.</param>
/// <param name="Artifacts">Digests of input artifacts by port (a list for list ports).</param>
/// <param name="Sources">Digests of files and directories named by path inputs, by port.</param>
/// <param name="Environment">What changes numerics: library versions, dtype, device kind.</param>
public sealed record KeyMaterial(
    string Activity,
    int Version,
    JsonObject Inputs,
    JsonObject Artifacts,
    JsonObject Sources,
    JsonObject Environment)
{
    public JsonObject ToJson() => new()
    {
        ["activity"] = Activity,
        ["version"] = Version,
        ["inputs"] = Inputs.DeepClone(),
        ["artifacts"] = Artifacts.DeepClone(),
        ["sources"] = Sources.DeepClone(),
        ["environment"] = Environment.DeepClone(),
    };

    public string Key => CanonicalJson.Sha256(CanonicalJson.Serialize(ToJson()));

    public static KeyMaterial FromJson(JsonObject json) => new(
        json["activity"]!.GetValue<string>(),
        json["version"]!.GetValue<int>(),
        json["inputs"]!.AsObject(),
        json["artifacts"]!.AsObject(),
        json["sources"]!.AsObject(),
        json["environment"]!.AsObject());

    /// <summary>Lists what differs from an earlier material, one line per changed component.</summary>
    public IReadOnlyList<string> Diff(KeyMaterial before)
    {
        var changes = new List<string>();
        if (Activity != before.Activity)
        {
            changes.Add($"activity: {before.Activity} -> {Activity}");
        }
        if (Version != before.Version)
        {
            changes.Add($"activity version: {before.Version} -> {Version}");
        }
        DiffObject("input", before.Inputs, Inputs, changes);
        DiffObject("input artifact", before.Artifacts, Artifacts, changes);
        DiffObject("source file", before.Sources, Sources, changes);
        DiffObject("environment", before.Environment, Environment, changes);
        return changes;
    }

    private static void DiffObject(string what, JsonObject before, JsonObject after, List<string> changes)
    {
        foreach (var key in before.Select(p => p.Key).Union(after.Select(p => p.Key)).Order(StringComparer.Ordinal))
        {
            var b = before.TryGetPropertyValue(key, out var bv) ? CanonicalJson.Serialize(bv) : null;
            var a = after.TryGetPropertyValue(key, out var av) ? CanonicalJson.Serialize(av) : null;
            if (b != a)
            {
                changes.Add($"{what} \"{key}\": {Show(b)} -> {Show(a)}");
            }
        }
    }

    private static string Show(string? canonical) => canonical is null ? "(absent)" : canonical.Length > 80 ? canonical[..77] + "..." : canonical;
}
