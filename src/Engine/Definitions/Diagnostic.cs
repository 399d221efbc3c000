namespace Pipelines.Engine.Definitions;

/// <summary>One problem found in a workflow or its inputs: where it is and what was expected.</summary>
/// <param name="File">The workflow file (or <c>--set</c> for command-line overrides).</param>
/// <param name="JsonPath">The JSON path of the offending value, such as <c>$.steps[1].inputs.count</c>.</param>
/// <param name="Message">What is wrong and what was expected.</param>
public sealed record Diagnostic(string File, string JsonPath, string Message)
{
    /// <inheritdoc />
    public override string ToString() => $"{File}: {JsonPath}: {Message}";
}

/// <summary>Thrown when a workflow cannot be run because of invalid input; carries every diagnostic found.</summary>
public sealed class WorkflowInvalidException(IReadOnlyList<Diagnostic> diagnostics)
    : Exception(diagnostics.Count == 1 ? diagnostics[0].ToString() : $"{diagnostics.Count} problems in the workflow")
{
    /// <summary>All problems found, in document order.</summary>
    public IReadOnlyList<Diagnostic> Diagnostics { get; } = diagnostics;
}

/// <summary>Builds JSON paths in the <c>$.a.b[0]</c> notation used in every diagnostic.</summary>
public static class JsonPaths
{
    /// <summary>Appends a property name, quoting it when it is not a plain identifier.</summary>
    public static string Prop(string parent, string name)
    {
        if (name.Length > 100)
        {
            name = name[..60] + "…"; // a path names the place; a megabyte-long key need not be repeated in full
        }
        if (name.Any(char.IsControl))
        {
            name = new string(name.Select(c => char.IsControl(c) ? '?' : c).ToArray());
        }
        var plain = name.Length > 0 && (char.IsLetter(name[0]) || name[0] == '_' || name[0] == '$')
            && name.All(c => char.IsLetterOrDigit(c) || c is '_' or '-' or '$');
        return plain ? $"{parent}.{name}" : $"{parent}['{name.Replace("'", "\\'")}']";
    }

    /// <summary>Appends an array index.</summary>
    public static string Index(string parent, int index) => $"{parent}[{index}]";
}
