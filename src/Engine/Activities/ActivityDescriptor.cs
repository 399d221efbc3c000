using System.Text.Json.Nodes;

namespace Pipelines.Engine.Activities;

/// <summary>The value kinds an input port can hold.</summary>
public enum PortValueKind { String, Integer, Number, Boolean, Path, Json, Artifact }

/// <summary>The type of a port: a value kind, a list flag and, for artifacts, the artifact kind.</summary>
public sealed record PortType(PortValueKind Value, bool IsList = false, string? ArtifactKind = null)
{
    public bool IsArtifact => Value == PortValueKind.Artifact;

    /// <inheritdoc />
    public override string ToString()
    {
        var name = IsArtifact ? ArtifactKind! : Value.ToString().ToLowerInvariant();
        return IsList ? name + "[]" : name;
    }
}

/// <summary>An input port: name, type, default, constraints and help.</summary>
public sealed record InputPortDescriptor(
    string Name,
    PortType Type,
    bool Required,
    JsonNode? Default,
    string Help,
    IReadOnlyList<string>? AllowedValues = null,
    double? Minimum = null,
    double? Maximum = null,
    PathKind PathKind = PathKind.Any);

/// <summary>What a path input must name: checked at validation, before anything runs.</summary>
public enum PathKind { Any, File, Directory }

/// <summary>An output port: name, artifact kind, media type and help.</summary>
public sealed record OutputPortDescriptor(string Name, string Kind, string MediaType, string Help, string FileName, bool IsDirectory);

/// <summary>Everything there is to know about an activity without running it.</summary>
public sealed record ActivityDescriptor(
    string Type,
    int Version,
    string Category,
    string Summary,
    IReadOnlyList<InputPortDescriptor> Inputs,
    IReadOnlyList<OutputPortDescriptor> Outputs,
    IReadOnlyList<string> Resources,
    IReadOnlyList<string>? Settings = null)
{
    /// <summary>
    /// Environment variables whose values change the activity's results (a default endpoint or model name); their
    /// values are part of the cache key. Never a secret: keys are named by variable, and the name alone is in the key.
    /// </summary>
    public IReadOnlyList<string> SettingVariables => Settings ?? [];

    public InputPortDescriptor? Input(string name) => Inputs.FirstOrDefault(i => i.Name == name);
    public OutputPortDescriptor? Output(string name) => Outputs.FirstOrDefault(o => o.Name == name);
    /// <summary>The job queue: "gpu" for activities that need one, else "default".</summary>
    public string Queue => Resources.Contains("gpu") ? "gpu" : "default";
}
