using System.Text.Json.Nodes;

namespace Pipelines.Engine.Definitions;

/// <summary>A parsed workflow document: parameters and steps, as the user wrote them.</summary>
public sealed record WorkflowDefinition
{
    public required string Name { get; init; }
    public string? Description { get; init; }
    public IReadOnlyList<ParameterDefinition> Parameters { get; init; } = [];
    public IReadOnlyList<StepDefinition> Steps { get; init; } = [];
    /// <summary>Designer layout (node positions); carried through untouched and never part of a cache key.</summary>
    public JsonObject? Layout { get; init; }
    /// <summary>Checkpoint watchers: the server starts a run for each new checkpoint they find.</summary>
    public IReadOnlyList<TriggerDefinition> Triggers { get; init; } = [];
    /// <summary>The file it was read from, for diagnostics; "&lt;inline&gt;" when not from a file.</summary>
    public string SourceFile { get; init; } = "<inline>";
}

/// <summary>Value types a workflow parameter may have.</summary>
public enum ParameterType { String, Integer, Number, Boolean, Path }

/// <summary>A workflow parameter: a named value with an optional default, overridable with <c>--set</c>.</summary>
public sealed record ParameterDefinition(string Name, ParameterType Type, JsonNode? Default, string? Description, string JsonPath)
{
    /// <summary>True when the parameter has no default and must be set at run time.</summary>
    public bool IsRequired => Default is null;
}

/// <summary>One step: an activity with its input bindings.</summary>
public sealed record StepDefinition
{
    public required string Id { get; init; }
    public required string Activity { get; init; }
    public string? Description { get; init; }
    public IReadOnlyDictionary<string, InputBinding> Inputs { get; init; } = new Dictionary<string, InputBinding>();
    /// <summary>JSON path of the step object, e.g. <c>$.steps[2]</c>.</summary>
    public required string JsonPath { get; init; }
}

/// <summary>How a step input gets its value.</summary>
public abstract record InputBinding(string JsonPath);

/// <summary>A literal JSON value written in the workflow.</summary>
public sealed record LiteralBinding(JsonNode? Value, string JsonPath) : InputBinding(JsonPath);

/// <summary>A reference to a workflow parameter: <c>{ "param": "seed" }</c>.</summary>
public sealed record ParameterBinding(string Parameter, string JsonPath) : InputBinding(JsonPath);

/// <summary>A reference to another step's output: <c>{ "from": "load.dataset" }</c>.</summary>
public sealed record StepOutputBinding(string Step, string Output, string JsonPath) : InputBinding(JsonPath);

/// <summary>A list of bindings, for list-typed ports: <c>[{ "from": "a.x" }, { "from": "b.x" }]</c>.</summary>
public sealed record ListBinding(IReadOnlyList<InputBinding> Items, string JsonPath) : InputBinding(JsonPath);

/// <summary>
/// A checkpoint watcher: on <see cref="Schedule"/> (cron), look in <see cref="Watch"/> for entries matching
/// <see cref="Pattern"/>; each new, complete one (size stable for <see cref="StableSeconds"/>) starts a run with its
/// path bound to the workflow parameter <see cref="Parameter"/>. Checkpoints are deduplicated by content digest.
/// </summary>
public sealed record TriggerDefinition(string Id, string Watch, string Pattern, string Parameter, string Schedule, int StableSeconds);
