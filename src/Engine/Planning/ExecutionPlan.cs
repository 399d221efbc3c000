using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Definitions;

namespace Pipelines.Engine.Planning;

/// <summary>A validated, resolved workflow: steps in topological order with every input bound.</summary>
public sealed record ExecutionPlan(
    WorkflowDefinition Definition,
    IReadOnlyDictionary<string, JsonNode> Parameters,
    IReadOnlyList<PlannedStep> Steps)
{
    public PlannedStep Step(string id) => Steps.First(s => s.Id == id);
}

/// <summary>A step ready to run once its dependencies have.</summary>
public sealed record PlannedStep(
    StepDefinition Definition,
    IActivity Activity,
    IReadOnlyDictionary<string, ResolvedInput> Inputs,
    IReadOnlyList<string> DependsOn)
{
    public string Id => Definition.Id;
    public ActivityDescriptor Descriptor => Activity.Descriptor;

    /// <summary>The ledger record of this step in a run, with a status and nothing else yet.</summary>
    public Ledger.StepRecord Record(string runId, Ledger.StepStatus status, DateTimeOffset? startedAt = null) => new(
        RunId: runId, StepId: Id, Activity: Descriptor.Type, ActivityVersion: Descriptor.Version, Status: status,
        CacheKey: null, KeyMaterial: null, StartedAt: startedAt, EndedAt: null, DurationMs: null, Error: null, Outputs: null);
}

/// <summary>A step input after parameters and defaults are applied.</summary>
public abstract record ResolvedInput;

/// <summary>A plain JSON value.</summary>
public sealed record ValueInput(JsonNode? Value) : ResolvedInput;

/// <summary>A file or directory on disk, hashed as a source artifact.</summary>
public sealed record PathInput(string FullPath, string Written) : ResolvedInput;

/// <summary>Outputs of earlier steps (one, or several for list ports).</summary>
public sealed record ArtifactInput(IReadOnlyList<OutputReference> References, bool IsList) : ResolvedInput;

/// <summary>One step output.</summary>
public sealed record OutputReference(string Step, string Output)
{
    public override string ToString() => $"{Step}.{Output}";
}
