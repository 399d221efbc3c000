using System.Text.Json.Nodes;

namespace Pipelines.Activities;

/// <summary>
/// Numbers for result files. JSON has no NaN or infinity (System.Text.Json refuses to write them), so a value that
/// is not finite is written as null: documented in the README, and readers treat null as "undefined".
/// </summary>
public static class JsonNumbers
{
    public static JsonNode? Round(double value, int digits = 6) => double.IsFinite(value) ? JsonValue.Create(Math.Round(value, digits)) : null;
}
