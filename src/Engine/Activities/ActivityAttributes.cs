namespace Pipelines.Engine.Activities;

/// <summary>Declares an activity: its workflow type name, version, category and one-line summary.</summary>
/// <param name="type">The name used in workflow files, such as <c>data.sample</c>.</param>
[AttributeUsage(AttributeTargets.Class, Inherited = false)]
public sealed class ActivityAttribute(string type) : Attribute
{
    public string Type { get; } = type;
    /// <summary>Bump when results change for the same inputs: it is part of every cache key.</summary>
    public int Version { get; init; } = 1;
    public string Category { get; init; } = "General";
    public string Summary { get; init; } = "";
    /// <summary>Resources the activity needs, e.g. "gpu"; they choose the job queue on the server.</summary>
    public string[] Resources { get; init; } = [];
    /// <summary>Environment variables whose values change results (never secrets): their values join the cache key.</summary>
    public string[] Settings { get; init; } = [];
}

/// <summary>Declares an output port on an activity class.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true, Inherited = false)]
public sealed class OutputAttribute(string name, string kind) : Attribute
{
    public string Name { get; } = name;
    /// <summary>Artifact kind, one of <see cref="ArtifactKinds"/>.</summary>
    public string Kind { get; } = kind;
    public string Help { get; init; } = "";
    public string MediaType { get; init; } = "application/octet-stream";
    /// <summary>File name the artifact gets when materialized beside a run's results.</summary>
    public string FileName { get; init; } = "";
    /// <summary>True for directory artifacts such as model checkpoints.</summary>
    public bool IsDirectory { get; init; }
}

/// <summary>Describes an input property of an activity's input record.</summary>
[AttributeUsage(AttributeTargets.Property, Inherited = false)]
public sealed class InputAttribute(string help) : Attribute
{
    public string Help { get; } = help;
    /// <summary>For artifact inputs: the artifact kind the port accepts.</summary>
    public string? Kind { get; init; }
    /// <summary>For string inputs: the value is a file or directory path, hashed as a source artifact.</summary>
    public bool IsPath { get; init; }
    /// <summary>For path inputs: whether the path must name a regular file or a directory.</summary>
    public PathKind PathKind { get; init; }
    public double Minimum { get; init; } = double.NaN;
    public double Maximum { get; init; } = double.NaN;
}
