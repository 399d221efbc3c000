using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Definitions;
using Pipelines.Engine.Validation;

namespace Pipelines.Engine.Planning;

/// <summary>Parse, resolve parameters, validate and plan: everything that happens before a step runs.</summary>
public sealed class WorkflowCompiler(ActivityRegistry registry)
{
    private static readonly WorkflowValidator Validator = new();

    public ActivityRegistry Registry => registry;

    /// <summary>Reads and compiles a workflow file; throws <see cref="WorkflowInvalidException"/> listing every problem.</summary>
    public ExecutionPlan CompileFile(string file, IReadOnlyDictionary<string, string> overrides, PathPolicy? paths = null) =>
        CompileText(WorkflowParser.ReadText(file), file, overrides, paths ?? PathPolicy.Default(file));

    /// <summary>Compiles workflow JSON, reporting structural and semantic problems together.</summary>
    public ExecutionPlan CompileText(string json, string file, IReadOnlyDictionary<string, string> overrides, PathPolicy paths)
    {
        var errors = new List<Diagnostic>();
        var definition = WorkflowParser.ParseLenient(json, file, errors);
        if (definition is null)
        {
            throw new WorkflowInvalidException(errors);
        }
        return Compile(definition, overrides, paths, errors);
    }

    /// <summary>Compiles a parsed definition.</summary>
    public ExecutionPlan Compile(WorkflowDefinition definition, IReadOnlyDictionary<string, string> overrides, PathPolicy paths, List<Diagnostic>? earlier = null)
    {
        var errors = earlier ?? new List<Diagnostic>();
        var parameters = ParameterResolver.Resolve(definition, overrides, errors);
        var result = Validator.Validate(new ValidationSubject(definition, parameters, registry, paths));
        errors.AddRange(result.Errors.Select(e => new Diagnostic(definition.SourceFile, e.PropertyName, e.ErrorMessage)));
        if (errors.Count > 0)
        {
            throw new WorkflowInvalidException(errors.DistinctBy(e => (e.JsonPath, e.Message)).ToList());
        }
        return Plan(definition, parameters, paths);
    }

    private ExecutionPlan Plan(WorkflowDefinition definition, Dictionary<string, JsonNode> parameters, PathPolicy paths)
    {
        var planned = new Dictionary<string, PlannedStep>(StringComparer.Ordinal);
        foreach (var step in definition.Steps)
        {
            var activity = registry.Find(step.Activity)!;
            var inputs = new Dictionary<string, ResolvedInput>(StringComparer.Ordinal);
            foreach (var port in activity.Descriptor.Inputs)
            {
                if (!step.Inputs.TryGetValue(port.Name, out var binding))
                {
                    if (!port.Type.IsArtifact)
                    {
                        inputs[port.Name] = Value(port, port.Default?.DeepClone(), paths);
                    }
                    continue;
                }
                inputs[port.Name] = binding switch
                {
                    LiteralBinding l => Value(port, l.Value?.DeepClone(), paths),
                    ParameterBinding p => Value(port, parameters[p.Parameter].DeepClone(), paths),
                    StepOutputBinding r => new ArtifactInput([new OutputReference(r.Step, r.Output)], port.Type.IsList),
                    ListBinding list => new ArtifactInput(list.Items.Cast<StepOutputBinding>().Select(r => new OutputReference(r.Step, r.Output)).ToList(), true),
                    _ => throw new InvalidOperationException("unexpected binding"),
                };
            }
            planned[step.Id] = new PlannedStep(step, activity, inputs, WorkflowValidator.Dependencies(step).Distinct().ToList());
        }
        return new ExecutionPlan(definition, parameters, TopologicalOrder(definition, planned));
    }

    private static ResolvedInput Value(InputPortDescriptor port, JsonNode? value, PathPolicy paths)
    {
        if (port.Type.Value == PortValueKind.Path && !port.Type.IsList && value is JsonValue v)
        {
            var written = v.GetValue<string>();
            return new PathInput(paths.Resolve(written, out _)!, written);
        }
        return new ValueInput(value);
    }

    /// <summary>Kahn's algorithm, keeping the file's order among ready steps so plans are stable; O(n log n + edges).</summary>
    private static List<PlannedStep> TopologicalOrder(WorkflowDefinition definition, Dictionary<string, PlannedStep> steps)
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        var ordered = new List<PlannedStep>();
        foreach (var s in definition.Steps)
        {
            if (index.TryAdd(s.Id, ordered.Count))
            {
                ordered.Add(steps[s.Id]);
            }
        }
        var waiting = new int[ordered.Count];
        var dependents = new List<int>[ordered.Count];
        var ready = new SortedSet<int>();
        for (var i = 0; i < ordered.Count; i++)
        {
            var deps = ordered[i].DependsOn.Distinct(StringComparer.Ordinal).ToList();
            waiting[i] = deps.Count;
            foreach (var d in deps)
            {
                (dependents[index[d]] ??= []).Add(i);
            }
            if (deps.Count == 0)
            {
                ready.Add(i);
            }
        }
        var order = new List<PlannedStep>(ordered.Count);
        while (ready.Count > 0)
        {
            var next = ready.Min;
            ready.Remove(next);
            order.Add(ordered[next]);
            foreach (var d in dependents[next] ?? [])
            {
                if (--waiting[d] == 0)
                {
                    ready.Add(d);
                }
            }
        }
        if (order.Count != ordered.Count)
        {
            throw new InvalidOperationException("the workflow has a cycle"); // validation reports cycles before planning
        }
        return order;
    }
}
