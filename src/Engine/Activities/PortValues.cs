using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Definitions;

namespace Pipelines.Engine.Activities;

/// <summary>Checks a JSON value against a value port's type and constraints.</summary>
public static class PortValues
{
    /// <summary>Returns null when the value fits the port, else what was expected.</summary>
    public static string? Check(InputPortDescriptor port, JsonNode? value)
    {
        if (port.Type.IsList)
        {
            if (value is not JsonArray array)
            {
                return $"expected a list of {Wording(port.Type.Value)}, got {WorkflowParser.Describe(value)}";
            }
            for (var i = 0; i < array.Count; i++)
            {
                if (CheckScalar(port, array[i]) is { } problem)
                {
                    return $"item {i}: {problem}";
                }
            }
            return null;
        }
        return CheckScalar(port, value);
    }

    private static string? CheckScalar(InputPortDescriptor port, JsonNode? value)
    {
        var kind = port.Type.Value;
        if (kind == PortValueKind.Json)
        {
            return null;
        }
        if (value is not JsonValue v)
        {
            return $"expected {Wording(kind)}, got {WorkflowParser.Describe(value)}";
        }
        var jsonKind = v.GetValueKind();
        switch (kind)
        {
            case PortValueKind.String or PortValueKind.Path when jsonKind == JsonValueKind.String:
                var s = v.GetValue<string>();
                if (kind == PortValueKind.Path && string.IsNullOrWhiteSpace(s))
                {
                    return "expected a non-empty path";
                }
                if (port.AllowedValues is { } allowed && !allowed.Contains(s))
                {
                    return $"expected one of: {string.Join(", ", allowed)}; got \"{s}\"";
                }
                return null;
            case PortValueKind.Boolean when jsonKind is JsonValueKind.True or JsonValueKind.False:
                return null;
            case PortValueKind.Integer when jsonKind == JsonValueKind.Number:
                var raw = v.ToJsonString();
                var d = double.Parse(raw, CultureInfo.InvariantCulture);
                if (raw.IndexOfAny(['.', 'e', 'E']) >= 0)
                {
                    return $"expected an integer{Range(port)} written without a fraction part or exponent, got {WorkflowParser.Short(raw)}";
                }
                if (d != Math.Floor(d) || Math.Abs(d) > int.MaxValue)
                {
                    return $"expected an integer{Range(port)}, got {v.ToJsonString()}";
                }
                return CheckRange(port, d);
            case PortValueKind.Number when jsonKind == JsonValueKind.Number:
                return CheckRange(port, double.Parse(v.ToJsonString(), CultureInfo.InvariantCulture));
            default:
                return $"expected {Wording(kind)}{Range(port)}, got {WorkflowParser.Describe(value)}";
        }
    }

    private static string? CheckRange(InputPortDescriptor port, double d) =>
        (port.Minimum is { } min && d < min) || (port.Maximum is { } max && d > max)
            ? $"expected {Wording(port.Type.Value)}{Range(port)}, got {d.ToString(CultureInfo.InvariantCulture)}"
            : null;

    private static string Range(InputPortDescriptor port) => (port.Minimum, port.Maximum) switch
    {
        ({ } min, { } max) => $" between {min.ToString(CultureInfo.InvariantCulture)} and {max.ToString(CultureInfo.InvariantCulture)}",
        ({ } min, null) => $" ≥ {min.ToString(CultureInfo.InvariantCulture)}",
        (null, { } max) => $" ≤ {max.ToString(CultureInfo.InvariantCulture)}",
        _ => "",
    };

    /// <summary>Human wording of a value kind.</summary>
    public static string Wording(PortValueKind kind) => kind switch
    {
        PortValueKind.String => "a string",
        PortValueKind.Integer => "an integer",
        PortValueKind.Number => "a number",
        PortValueKind.Boolean => "true or false",
        PortValueKind.Path => "a path (string)",
        PortValueKind.Json => "any JSON value",
        _ => "an artifact reference { \"from\": \"step.output\" }",
    };

    /// <summary>Whether a workflow parameter of the given type can feed a port.</summary>
    public static bool Accepts(PortType port, ParameterType parameter) => !port.IsList && (port.Value, parameter) switch
    {
        (PortValueKind.String, ParameterType.String) => true,
        (PortValueKind.Path, ParameterType.Path or ParameterType.String) => true,
        (PortValueKind.Integer, ParameterType.Integer) => true,
        (PortValueKind.Number, ParameterType.Number or ParameterType.Integer) => true,
        (PortValueKind.Boolean, ParameterType.Boolean) => true,
        (PortValueKind.Json, _) => true,
        _ => false,
    };
}
