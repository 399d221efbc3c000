using System.Text.Json.Nodes;
using FluentValidation;
using FluentValidation.Results;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Definitions;

namespace Pipelines.Engine.Validation;

/// <summary>What the validator checks a definition against: the activities, the parameter values and the path policy.</summary>
public sealed record ValidationSubject(
    WorkflowDefinition Definition,
    IReadOnlyDictionary<string, JsonNode> Parameters,
    ActivityRegistry Registry,
    PathPolicy Paths);

/// <summary>
/// Semantic validation of a parsed workflow. Every rule reports with the JSON path as the property name, so the
/// failures map one-to-one onto <see cref="Diagnostic"/>s.
/// </summary>
public sealed class WorkflowValidator : AbstractValidator<ValidationSubject>
{
    public WorkflowValidator()
    {
        RuleFor(s => s.Definition.Name)
            .NotEmpty().WithMessage("expected a non-empty workflow name")
            .MaximumLength(200).WithMessage("expected a name of at most 200 characters")
            .OverridePropertyName("$.name");
        RuleFor(s => s.Definition.Steps)
            .NotEmpty().WithMessage("expected at least one step")
            .OverridePropertyName("$.steps");
        RuleFor(s => s).Custom(CheckUniqueIds);
        RuleFor(s => s).Custom(CheckSteps);
        RuleFor(s => s).Custom(CheckCycles);
        RuleFor(s => s).Custom(CheckTriggers);
    }

    private static void CheckTriggers(ValidationSubject s, ValidationContext<ValidationSubject> context)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < s.Definition.Triggers.Count; i++)
        {
            var t = s.Definition.Triggers[i];
            var at = $"$.triggers[{i}]";
            if (t.Id.Length > 0 && !ids.Add(t.Id))
            {
                context.Fail($"{at}.id", $"duplicate trigger id \"{t.Id}\"");
            }
            if (t.Parameter.Length > 0 && s.Definition.Parameters.All(p => p.Name != t.Parameter))
            {
                context.Fail($"{at}.parameter", $"no workflow parameter \"{t.Parameter}\" to bind the checkpoint to; declare it under \"parameters\" (type path or string)");
            }
        }
    }

    private static void CheckUniqueIds(ValidationSubject s, ValidationContext<ValidationSubject> context)
    {
        var first = new Dictionary<string, StepDefinition>(StringComparer.Ordinal);
        foreach (var step in s.Definition.Steps)
        {
            if (!first.TryAdd(step.Id, step))
            {
                context.Fail(JsonPaths.Prop(step.JsonPath, "id"), $"duplicate step id \"{step.Id}\" (first used at {first[step.Id].JsonPath})");
            }
        }
    }

    private static void CheckSteps(ValidationSubject s, ValidationContext<ValidationSubject> context)
    {
        var steps = s.Definition.Steps.GroupBy(x => x.Id).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        foreach (var step in s.Definition.Steps)
        {
            var activity = s.Registry.Find(step.Activity);
            if (activity is null)
            {
                // Suggestions only for names of a plausible length: the edit distance costs |a|·|b|, so a megabyte of
                // name must not buy a gigabyte of table.
                var near = step.Activity.Length <= 64
                    ? s.Registry.All.Select(a => a.Descriptor.Type).OrderBy(t => Levenshtein(t, step.Activity)).First()
                    : null;
                context.Fail(JsonPaths.Prop(step.JsonPath, "activity"),
                    $"unknown activity \"{WorkflowParser.Short(step.Activity)}\"; " + (near is null ? "" : $"did you mean \"{near}\"? ") + "(`pipelines activities` lists them all)");
                continue;
            }
            var descriptor = activity.Descriptor;
            var inputsPath = JsonPaths.Prop(step.JsonPath, "inputs");
            var literalValues = new Dictionary<string, JsonNode?>(StringComparer.Ordinal);
            var typesOk = true;
            foreach (var (name, binding) in step.Inputs)
            {
                var port = descriptor.Input(name);
                if (port is null)
                {
                    var names = descriptor.Inputs.Count == 0 ? "it takes no inputs" : "expected one of: " + string.Join(", ", descriptor.Inputs.Select(i => i.Name));
                    context.Fail(binding.JsonPath, $"unknown input \"{WorkflowParser.Short(name)}\" for activity {descriptor.Type}; {names}");
                    typesOk = false;
                    continue;
                }
                var problem = CheckBinding(s, steps, step, port, binding, literalValues);
                if (problem is not null)
                {
                    context.Fail(problem.Value.Path, problem.Value.Message);
                    typesOk = false;
                }
            }
            foreach (var port in descriptor.Inputs.Where(p => p.Required && !step.Inputs.ContainsKey(p.Name)))
            {
                context.Fail(inputsPath, $"missing required input \"{port.Name}\" ({port.Type}): {port.Help}");
                typesOk = false;
            }
            if (typesOk && s.Registry.ValidatorFor(activity) is { } validator)
            {
                foreach (var port in descriptor.Inputs.Where(p => !literalValues.ContainsKey(p.Name) && !p.Type.IsArtifact && p.Default is not null))
                {
                    literalValues[port.Name] = port.Default!.DeepClone();
                }
                object input;
                try
                {
                    input = InputBinder.Bind(activity.InputType, literalValues, new Dictionary<string, object>());
                }
                catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or NotSupportedException)
                {
                    context.Fail(inputsPath, $"inputs do not fit activity {descriptor.Type}: {e.Message}");
                    continue;
                }
                var result = validator.Validate(new ValidationContext<object>(input));
                foreach (var failure in result.Errors)
                {
                    var port = System.Text.Json.JsonNamingPolicy.CamelCase.ConvertName(failure.PropertyName.Split('.', '[')[0]);
                    var path = step.Inputs.TryGetValue(port, out var b) ? b.JsonPath : inputsPath;
                    context.Fail(path, failure.ErrorMessage);
                }
            }
        }
    }

    private static (string Path, string Message)? CheckBinding(
        ValidationSubject s,
        Dictionary<string, StepDefinition> steps,
        StepDefinition step,
        InputPortDescriptor port,
        InputBinding binding,
        Dictionary<string, JsonNode?> literalValues)
    {
        switch (binding)
        {
            case LiteralBinding literal:
                if (port.Type.IsArtifact)
                {
                    return (binding.JsonPath, $"expected a reference to a {port.Type} output, {{ \"from\": \"step.output\" }}; got {WorkflowParser.Describe(literal.Value)}");
                }
                if (PortValues.Check(port, literal.Value) is { } problem)
                {
                    return (binding.JsonPath, problem);
                }
                if (port.Type.Value == PortValueKind.Path && CheckPath(s.Paths, port, literal.Value!.GetValue<string>()) is { } pathError)
                {
                    return (binding.JsonPath, pathError);
                }
                literalValues[port.Name] = literal.Value;
                return null;
            case ParameterBinding parameter:
                var definition = s.Definition.Parameters.FirstOrDefault(p => p.Name == parameter.Parameter);
                if (definition is null)
                {
                    return (JsonPaths.Prop(binding.JsonPath, "param"), $"unknown parameter \"{parameter.Parameter}\"; " +
                        (s.Definition.Parameters.Count == 0 ? "the workflow declares no parameters" : "expected one of: " + string.Join(", ", s.Definition.Parameters.Select(p => p.Name))));
                }
                if (port.Type.IsArtifact || !PortValues.Accepts(port.Type, definition.Type))
                {
                    return (binding.JsonPath, $"parameter \"{definition.Name}\" is of type {ParameterValues.Name(definition.Type)}, but input \"{port.Name}\" expects {port.Type}");
                }
                if (!s.Parameters.TryGetValue(definition.Name, out var value))
                {
                    return null; // already reported: a required parameter without a value
                }
                if (PortValues.Check(port, value) is { } valueProblem)
                {
                    return (binding.JsonPath, $"parameter \"{definition.Name}\": {valueProblem}");
                }
                if (port.Type.Value == PortValueKind.Path && CheckPath(s.Paths, port, value.GetValue<string>()) is { } paramPathError)
                {
                    return (binding.JsonPath, $"parameter \"{definition.Name}\": {paramPathError}");
                }
                literalValues[port.Name] = value;
                return null;
            case StepOutputBinding reference:
                if (!port.Type.IsArtifact)
                {
                    return (binding.JsonPath, $"input \"{port.Name}\" expects {PortValues.Wording(port.Type.Value)}, not a reference to another step's output");
                }
                return CheckReference(s, steps, step, port, reference);
            case ListBinding list:
                if (!port.Type.IsArtifact || !port.Type.IsList)
                {
                    return (binding.JsonPath, $"input \"{port.Name}\" expects {port.Type}, not a list of references");
                }
                foreach (var item in list.Items)
                {
                    if (item is not StepOutputBinding r)
                    {
                        return (item.JsonPath, "expected a reference { \"from\": \"step.output\" }");
                    }
                    if (CheckReference(s, steps, step, port, r) is { } refProblem)
                    {
                        return refProblem;
                    }
                }
                return null;
            default:
                return (binding.JsonPath, "unsupported binding");
        }
    }

    /// <summary>Resolves a path input inside the roots and checks it names what the port needs (a file or a directory).</summary>
    private static string? CheckPath(PathPolicy paths, InputPortDescriptor port, string raw)
    {
        if (paths.Resolve(raw, out var error) is not { } full)
        {
            return error;
        }
        var shown = WorkflowParser.Short(raw);
        return port.PathKind switch
        {
            PathKind.File when !Common.SafeFiles.IsRegularFile(full) => $"expected a file, but \"{shown}\" is a directory",
            PathKind.Directory when !Common.SafeFiles.IsDirectory(full) => $"expected a directory, but \"{shown}\" is a file",
            _ => null,
        };
    }

    private static (string Path, string Message)? CheckReference(
        ValidationSubject s, Dictionary<string, StepDefinition> steps, StepDefinition step, InputPortDescriptor port, StepOutputBinding reference)
    {
        var path = JsonPaths.Prop(reference.JsonPath, "from");
        if (reference.Step == step.Id)
        {
            return (path, $"step \"{step.Id}\" refers to its own output; a step can only use outputs of other steps");
        }
        if (!steps.TryGetValue(reference.Step, out var source))
        {
            return (path, $"no step \"{reference.Step}\"; expected one of: {string.Join(", ", steps.Keys)}");
        }
        var activity = s.Registry.Find(source.Activity);
        if (activity is null)
        {
            return null; // the unknown activity is reported at its own step
        }
        var output = activity.Descriptor.Output(reference.Output);
        if (output is null)
        {
            return (path, $"step \"{source.Id}\" ({source.Activity}) has no output \"{reference.Output}\"; expected one of: {string.Join(", ", activity.Descriptor.Outputs.Select(o => o.Name))}");
        }
        if (output.Kind != port.Type.ArtifactKind)
        {
            return (path, $"type mismatch: {source.Id}.{output.Name} is a {output.Kind}, but input \"{port.Name}\" expects a {port.Type.ArtifactKind}");
        }
        return null;
    }

    /// <summary>
    /// Depth-first search for cycles with an explicit stack: no recursion, so a workflow of any length cannot overflow
    /// the thread's stack (a 60,000-step chain is as cheap as a short one).
    /// </summary>
    private static void CheckCycles(ValidationSubject s, ValidationContext<ValidationSubject> context)
    {
        var steps = s.Definition.Steps.GroupBy(x => x.Id).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var state = new Dictionary<string, int>(StringComparer.Ordinal); // 1 visiting, 2 done
        var path = new List<string>();
        var onPath = new Dictionary<string, int>(StringComparer.Ordinal); // id → index in path
        var frames = new Stack<IEnumerator<string>>();
        var reported = new HashSet<string>();
        foreach (var root in steps.Keys)
        {
            if (state.GetValueOrDefault(root) != 0)
            {
                continue;
            }
            Enter(root);
            while (frames.Count > 0)
            {
                var deps = frames.Peek();
                if (!deps.MoveNext())
                {
                    deps.Dispose();
                    frames.Pop();
                    var done = path[^1];
                    path.RemoveAt(path.Count - 1);
                    onPath.Remove(done);
                    state[done] = 2;
                    continue;
                }
                var dep = deps.Current;
                if (dep == path[^1])
                {
                    continue; // self-reference is reported by the binding check
                }
                var seen = state.GetValueOrDefault(dep);
                if (seen == 1)
                {
                    var cycle = path.Skip(onPath[dep]).Append(dep).ToList();
                    if (reported.Add(string.Join(",", cycle.Order(StringComparer.Ordinal))))
                    {
                        var shown = cycle.Count <= 12 ? cycle : cycle.Take(5).Append($"… {cycle.Count - 10} more …").Concat(cycle.TakeLast(5)).ToList();
                        context.Fail(steps[dep].JsonPath, $"cycle between steps: {string.Join(" -> ", shown)}");
                    }
                }
                else if (seen == 0)
                {
                    Enter(dep);
                }
            }
        }

        void Enter(string id)
        {
            state[id] = 1;
            onPath[id] = path.Count;
            path.Add(id);
            frames.Push(Dependencies(steps[id]).Where(steps.ContainsKey).Distinct().GetEnumerator());
        }
    }

    /// <summary>The ids of the steps whose outputs a step uses.</summary>
    public static IEnumerable<string> Dependencies(StepDefinition step) => step.Inputs.Values.SelectMany(b => b switch
    {
        StepOutputBinding r => [r.Step],
        ListBinding l => l.Items.OfType<StepOutputBinding>().Select(r => r.Step),
        _ => [],
    });

    /// <summary>Edit distance in two rows of memory.</summary>
    private static int Levenshtein(string a, string b)
    {
        var previous = new int[b.Length + 1];
        var current = new int[b.Length + 1];
        for (var j = 0; j <= b.Length; j++)
        {
            previous[j] = j;
        }
        for (var i = 1; i <= a.Length; i++)
        {
            current[0] = i;
            for (var j = 1; j <= b.Length; j++)
            {
                current[j] = Math.Min(Math.Min(previous[j] + 1, current[j - 1] + 1), previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
            }
            (previous, current) = (current, previous);
        }
        return previous[b.Length];
    }
}

internal static class ValidationContextExtensions
{
    public static void Fail(this ValidationContext<ValidationSubject> context, string path, string message) =>
        context.AddFailure(new ValidationFailure(path, message));
}
