using System.Text.Json.Nodes;
using Pipelines.Engine.Definitions;

namespace Pipelines.Engine.Validation;

/// <summary>Combines parameter defaults with <c>--set name=value</c> overrides.</summary>
public static class ParameterResolver
{
    /// <summary>The file name diagnostics use for command-line overrides.</summary>
    public const string CommandLine = "--set";

    /// <summary>Resolves every parameter's value; problems go to <paramref name="errors"/>.</summary>
    public static Dictionary<string, JsonNode> Resolve(
        WorkflowDefinition definition,
        IReadOnlyDictionary<string, string> overrides,
        List<Diagnostic> errors)
    {
        var values = new Dictionary<string, JsonNode>(StringComparer.Ordinal);
        foreach (var (name, text) in overrides)
        {
            var parameter = definition.Parameters.FirstOrDefault(p => p.Name == name);
            if (parameter is null)
            {
                var known = definition.Parameters.Count == 0 ? "the workflow declares none" : "expected one of: " + string.Join(", ", definition.Parameters.Select(p => p.Name));
                errors.Add(new(CommandLine, JsonPaths.Prop("$.parameters", name), $"unknown parameter \"{name}\"; {known}"));
                continue;
            }
            var value = ParameterValues.FromText(parameter.Type, text, out var error);
            if (value is null)
            {
                errors.Add(new(CommandLine, parameter.JsonPath, $"bad value for parameter \"{name}\": {error}"));
                continue;
            }
            values[name] = value;
        }
        foreach (var parameter in definition.Parameters)
        {
            if (values.ContainsKey(parameter.Name))
            {
                continue;
            }
            if (parameter.Default is null)
            {
                errors.Add(new(definition.SourceFile, parameter.JsonPath, $"parameter \"{parameter.Name}\" has no default; set it with --set {parameter.Name}=VALUE"));
                continue;
            }
            values[parameter.Name] = parameter.Default.DeepClone();
        }
        return values;
    }

    /// <summary>Parses "name=value" pairs as given on the command line.</summary>
    public static Dictionary<string, string> ParseAssignments(IEnumerable<string> assignments, List<Diagnostic> errors)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var assignment in assignments)
        {
            var eq = assignment.IndexOf('=');
            if (eq <= 0)
            {
                errors.Add(new(CommandLine, "$.parameters", $"expected name=value, got \"{assignment}\""));
                continue;
            }
            result[assignment[..eq]] = assignment[(eq + 1)..];
        }
        return result;
    }
}
