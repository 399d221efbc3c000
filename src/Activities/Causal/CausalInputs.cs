using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>Reading the causal family's inputs with one-line errors that name the row and field.</summary>
public static class CausalInputs
{
    /// <summary>The requested layers, or every layer when none is given; a layer outside the model is an error.</summary>
    public static IReadOnlyList<int> Layers(IReadOnlyList<int> requested, int layers)
    {
        if (requested.Any(l => l < 0 || l >= layers))
        {
            throw new ActivityException($"inputs.layers: layer {requested.First(l => l < 0 || l >= layers)} does not exist; this model has layers 0..{layers - 1}");
        }
        return requested.Count > 0 ? requested : Enumerable.Range(0, layers).ToList();
    }

    public static string Text(JsonObject row, string field, int index) =>
        row[field] is JsonValue v && v.TryGetValue<string>(out var s) && s.Length > 0 ? s
            : throw new ActivityException($"dataset, row {index + 1}: expected a non-empty string field \"{field}\"");

    /// <summary>A string, number or boolean field as text (labels may be written either way).</summary>
    public static string Scalar(JsonObject row, string field, int index) =>
        row[field] is JsonValue v && v.ToString() is { Length: > 0 } s ? s
            : throw new ActivityException($"dataset, row {index + 1}: expected a field \"{field}\" (a string or number)");
}
