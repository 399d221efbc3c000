using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Pipelines.Engine.Definitions;

/// <summary>Checks and converts parameter values, both from JSON defaults and from <c>--set name=value</c>.</summary>
public static class ParameterValues
{
    /// <summary>Returns null when <paramref name="value"/> fits <paramref name="type"/>, else what was expected.</summary>
    public static string? Check(ParameterType type, JsonNode? value)
    {
        if (value is not JsonValue v)
        {
            return $"expected {Expected(type)}, got {WorkflowParser.Describe(value)}";
        }
        var ok = type switch
        {
            ParameterType.String or ParameterType.Path => v.GetValueKind() == JsonValueKind.String,
            ParameterType.Boolean => v.GetValueKind() is JsonValueKind.True or JsonValueKind.False,
            ParameterType.Number => v.GetValueKind() == JsonValueKind.Number,
            // Written as an integer: "4.0" or "4e0" would pass a numeric test but fail to bind to an integer input at run time.
            ParameterType.Integer => v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<long>(out _) && v.ToJsonString().IndexOfAny(['.', 'e', 'E']) < 0,
            _ => false,
        };
        if (ok && type == ParameterType.Path && string.IsNullOrWhiteSpace(v.GetValue<string>()))
        {
            return "expected a non-empty path";
        }
        return ok ? null : $"expected {Expected(type)}, got {WorkflowParser.Describe(value)}";
    }

    /// <summary>Parses command-line text for a parameter of the given type.</summary>
    public static JsonNode? FromText(ParameterType type, string text, out string? error)
    {
        error = null;
        switch (type)
        {
            case ParameterType.String:
                return JsonValue.Create(text);
            case ParameterType.Path:
                if (string.IsNullOrWhiteSpace(text))
                {
                    error = "expected a non-empty path";
                    return null;
                }
                return JsonValue.Create(text);
            case ParameterType.Integer:
                if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var l))
                {
                    return JsonValue.Create(l);
                }
                break;
            case ParameterType.Number:
                if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && double.IsFinite(d))
                {
                    return JsonValue.Create(d);
                }
                break;
            case ParameterType.Boolean:
                if (text is "true" or "false")
                {
                    return JsonValue.Create(text == "true");
                }
                break;
        }
        error = $"expected {Expected(type)}, got \"{text}\"";
        return null;
    }

    /// <summary>Human wording of a parameter type.</summary>
    public static string Expected(ParameterType type) => type switch
    {
        ParameterType.String => "a string",
        ParameterType.Integer => "an integer",
        ParameterType.Number => "a number",
        ParameterType.Boolean => "true or false",
        ParameterType.Path => "a path (string)",
        _ => type.ToString(),
    };

    /// <summary>The lower-case name used in workflow files.</summary>
    public static string Name(ParameterType type) => type.ToString().ToLowerInvariant();
}
