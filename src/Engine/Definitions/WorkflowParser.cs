using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Pipelines.Engine.Definitions;

/// <summary>
/// Reads workflow JSON strictly: unknown properties, wrong types and duplicate keys are errors, each reported with
/// its JSON path. All structural errors are collected before it gives up.
/// </summary>
public static partial class WorkflowParser
{
    private static readonly JsonDocumentOptions DocumentOptions = new()
    {
        CommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = false,
        MaxDepth = 64,
    };

    /// <summary>Step ids and parameter names: a letter, then letters, digits, '_' or '-'.</summary>
    [GeneratedRegex(@"^[A-Za-z][A-Za-z0-9_-]{0,63}\z")]
    public static partial Regex IdentifierPattern();

    /// <summary>Parses a workflow file; throws <see cref="WorkflowInvalidException"/> with every problem found.</summary>
    public static WorkflowDefinition ParseFile(string path) => Parse(ReadText(path), path);

    /// <summary>Workflow files are at most this large (a workflow of thousands of steps is far smaller).</summary>
    public const long MaxFileBytes = 16L << 20;

    private static readonly System.Text.UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>
    /// Decodes workflow bytes as strict UTF-8 (a leading BOM is allowed): invalid bytes are an error with their
    /// offset, never silently replaced.
    /// </summary>
    public static string DecodeUtf8(ReadOnlySpan<byte> bytes, string file)
    {
        if (bytes.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]))
        {
            bytes = bytes[3..];
        }
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (System.Text.DecoderFallbackException e)
        {
            var at = e.Index >= 0 ? $" at byte {e.Index}" : "";
            throw new WorkflowInvalidException([new Diagnostic(file, "$", $"invalid UTF-8{at}; expected a UTF-8 text file")]);
        }
    }

    /// <summary>Reads the text of a workflow file, or reports why it cannot.</summary>
    public static string ReadText(string path)
    {
        byte[] bytes;
        try
        {
            var info = new FileInfo(path);
            if (!info.Exists)
            {
                throw new WorkflowInvalidException([new Diagnostic(path, "$", Directory.Exists(path) ? "expected a workflow file, got a directory" : "no such workflow file")]);
            }
            if (!Common.SafeFiles.IsRegularFile(path))
            {
                throw new WorkflowInvalidException([new Diagnostic(path, "$", "expected a regular file (not a FIFO, device or socket)")]);
            }
            if (info.Length > MaxFileBytes)
            {
                throw new WorkflowInvalidException([new Diagnostic(path, "$", $"the file is {info.Length:N0} bytes; workflow files are at most {MaxFileBytes:N0}")]);
            }
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new WorkflowInvalidException([new Diagnostic(path, "$", $"cannot read the workflow file: {e.GetType().Name.Replace("Exception", "")}")]);
        }
        return DecodeUtf8(bytes, path);
    }

    /// <summary>Parses workflow JSON text; <paramref name="file"/> names it in diagnostics.</summary>
    public static WorkflowDefinition Parse(string json, string file)
    {
        var errors = new List<Diagnostic>();
        var definition = ParseLenient(json, file, errors);
        if (errors.Count > 0 || definition is null)
        {
            throw new WorkflowInvalidException(errors);
        }
        return definition;
    }

    /// <summary>
    /// Parses as much as it can: structural problems go to <paramref name="errors"/> and the well-formed rest is
    /// returned, so semantic validation can report its problems in the same pass. Null only for invalid JSON or a
    /// root that is not an object.
    /// </summary>
    public static WorkflowDefinition? ParseLenient(string json, string file, List<Diagnostic> errors)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, DocumentOptions);
        }
        catch (JsonException e)
        {
            var where = e.LineNumber is { } line ? $" (line {line + 1}, column {(e.BytePositionInLine ?? 0) + 1})" : "";
            var reason = e.Message.Split(" Path:", 2)[0].Split(" LineNumber:", 2)[0].TrimEnd('.');
            errors.Add(new Diagnostic(file, "$", $"invalid JSON{where}: {reason}"));
            return null;
        }

        using (doc)
        {
            var before = errors.Count;
            CheckText(doc.RootElement, "$", file, errors);
            return errors.Count > before ? null : ReadRoot(doc.RootElement, file, errors);
        }
    }

    /// <summary>
    /// Every string and property name must be valid Unicode: a JSON escape of a lone surrogate ("\ud800") parses,
    /// but nothing can write it back, so it is refused here with its path (depth is bounded by MaxDepth).
    /// </summary>
    private static void CheckText(JsonElement element, string path, string file, List<Diagnostic> errors)
    {
        const string Expected = "contains an unpaired surrogate escape (\\uD800–\\uDFFF alone); expected valid Unicode text";
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                var i = 0;
                foreach (var prop in element.EnumerateObject())
                {
                    string name;
                    try
                    {
                        name = prop.Name;
                    }
                    catch (InvalidOperationException)
                    {
                        errors.Add(new(file, $"{path} (property {i + 1})", $"a property name {Expected}"));
                        i++;
                        continue;
                    }
                    var child = JsonPaths.Prop(path, IsValidUnicode(name) ? name : $"#{i + 1}");
                    if (!IsValidUnicode(name))
                    {
                        errors.Add(new(file, child, $"the property name {Expected}"));
                    }
                    CheckText(prop.Value, child, file, errors);
                    i++;
                }
                break;
            case JsonValueKind.Array:
                var j = 0;
                foreach (var item in element.EnumerateArray())
                {
                    CheckText(item, JsonPaths.Index(path, j++), file, errors);
                }
                break;
            case JsonValueKind.String:
                string? text = null;
                try
                {
                    text = element.GetString();
                }
                catch (InvalidOperationException)
                {
                }
                if (text is null || !IsValidUnicode(text))
                {
                    errors.Add(new(file, path, $"the string {Expected}"));
                }
                break;
        }
    }

    /// <summary>True when every surrogate in the text is part of a pair.</summary>
    public static bool IsValidUnicode(string text)
    {
        for (var i = 0; i < text.Length; i++)
        {
            if (char.IsHighSurrogate(text[i]) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                i++;
            }
            else if (char.IsSurrogate(text[i]))
            {
                return false;
            }
        }
        return true;
    }

    private static WorkflowDefinition? ReadRoot(JsonElement root, string file, List<Diagnostic> errors)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            errors.Add(new(file, "$", $"expected a JSON object with \"name\" and \"steps\", got {Describe(root)}"));
            return null;
        }

        string? name = null, description = null;
        var parameters = new List<ParameterDefinition>();
        var steps = new List<StepDefinition>();
        JsonObject? layout = null;
        var triggers = new List<TriggerDefinition>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var sawSteps = false;

        foreach (var prop in root.EnumerateObject())
        {
            var path = JsonPaths.Prop("$", prop.Name);
            if (!seen.Add(prop.Name))
            {
                errors.Add(new(file, path, "duplicate property"));
                continue;
            }
            switch (prop.Name)
            {
                case "$schema":
                    ExpectString(prop.Value, file, path, errors);
                    break;
                case "name":
                    name = ExpectString(prop.Value, file, path, errors);
                    break;
                case "description":
                    description = ExpectString(prop.Value, file, path, errors);
                    break;
                case "parameters":
                    ReadParameters(prop.Value, file, path, errors, parameters);
                    break;
                case "steps":
                    sawSteps = true;
                    ReadSteps(prop.Value, file, path, errors, steps);
                    break;
                case "layout":
                    if (prop.Value.ValueKind != JsonValueKind.Object)
                    {
                        errors.Add(new(file, path, $"expected an object (designer layout), got {Describe(prop.Value)}"));
                    }
                    else
                    {
                        layout = JsonNode.Parse(prop.Value.GetRawText()) as JsonObject;
                    }
                    break;
                case "triggers":
                    ReadTriggers(prop.Value, file, path, errors, triggers);
                    break;
                default:
                    errors.Add(new(file, path, $"unknown property \"{prop.Name}\"; expected one of: name, description, parameters, steps, triggers, layout, $schema"));
                    break;
            }
        }

        if (!seen.Contains("name"))
        {
            errors.Add(new(file, "$", "missing required property \"name\""));
        }
        if (!sawSteps)
        {
            errors.Add(new(file, "$", "missing required property \"steps\" (an array of steps)"));
        }

        return new WorkflowDefinition
        {
            Name = name ?? "",
            Description = description,
            Parameters = parameters,
            Steps = steps,
            Layout = layout,
            Triggers = triggers,
            SourceFile = file,
        };
    }

    private static readonly string[] TriggerProperties = ["id", "watch", "pattern", "parameter", "schedule", "stableSeconds"];

    private static void ReadTriggers(JsonElement value, string file, string path, List<Diagnostic> errors, List<TriggerDefinition> triggers)
    {
        if (value.ValueKind != JsonValueKind.Array)
        {
            errors.Add(new(file, path, $"expected an array of triggers, got {Describe(value)}"));
            return;
        }
        var i = 0;
        foreach (var item in value.EnumerateArray())
        {
            var at = $"{path}[{i++}]";
            if (item.ValueKind != JsonValueKind.Object)
            {
                errors.Add(new(file, at, $"expected a trigger object, got {Describe(item)}"));
                continue;
            }
            string? Text(string name, string? fallback)
            {
                if (!item.TryGetProperty(name, out var v))
                {
                    if (fallback is null)
                    {
                        errors.Add(new(file, at, $"missing required property \"{name}\""));
                    }
                    return fallback;
                }
                if (v.ValueKind != JsonValueKind.String || v.GetString()!.Length == 0)
                {
                    errors.Add(new(file, JsonPaths.Prop(at, name), $"expected a non-empty string, got {Describe(v)}"));
                    return fallback;
                }
                return v.GetString();
            }
            var fields = new HashSet<string>(StringComparer.Ordinal);
            foreach (var p in item.EnumerateObject())
            {
                if (!fields.Add(p.Name))
                {
                    errors.Add(new(file, JsonPaths.Prop(at, p.Name), "duplicate property"));
                }
                else if (!TriggerProperties.Contains(p.Name))
                {
                    errors.Add(new(file, JsonPaths.Prop(at, p.Name), $"unknown property \"{Short(p.Name)}\"; expected one of: {string.Join(", ", TriggerProperties)}"));
                }
            }
            var stable = 10;
            if (item.TryGetProperty("stableSeconds", out var s) && (s.ValueKind != JsonValueKind.Number || !s.TryGetInt32(out stable) || stable < 0))
            {
                errors.Add(new(file, JsonPaths.Prop(at, "stableSeconds"), $"expected a whole number of seconds ≥ 0, got {Describe(s)}"));
            }
            var schedule = Text("schedule", "* * * * *")!;
            if (CronSchedule.Check(schedule) is { } cronProblem)
            {
                errors.Add(new(file, JsonPaths.Prop(at, "schedule"), cronProblem));
            }
            triggers.Add(new TriggerDefinition(Text("id", null) ?? "", Text("watch", null) ?? "", Text("pattern", "*")!, Text("parameter", null) ?? "", schedule, stable));
        }
    }

    private static void ReadParameters(JsonElement element, string file, string path, List<Diagnostic> errors, List<ParameterDefinition> parameters)
    {
        if (element.ValueKind != JsonValueKind.Object)
        {
            errors.Add(new(file, path, $"expected an object mapping parameter names to {{ \"type\", \"default\", \"description\" }}, got {Describe(element)}"));
            return;
        }
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var prop in element.EnumerateObject())
        {
            var ppath = JsonPaths.Prop(path, prop.Name);
            if (!names.Add(prop.Name))
            {
                errors.Add(new(file, ppath, "duplicate parameter"));
                continue;
            }
            if (!IdentifierPattern().IsMatch(prop.Name))
            {
                errors.Add(new(file, ppath, "invalid parameter name; expected a letter followed by letters, digits, '_' or '-' (at most 64)"));
            }
            if (prop.Value.ValueKind != JsonValueKind.Object)
            {
                errors.Add(new(file, ppath, $"expected an object with \"type\" and optional \"default\" and \"description\", got {Describe(prop.Value)}"));
                continue;
            }
            ParameterType? type = null;
            JsonNode? defaultValue = null;
            string? description = null;
            var fields = new HashSet<string>(StringComparer.Ordinal);
            foreach (var field in prop.Value.EnumerateObject())
            {
                var fpath = JsonPaths.Prop(ppath, field.Name);
                if (!fields.Add(field.Name))
                {
                    errors.Add(new(file, fpath, "duplicate property"));
                    continue;
                }
                switch (field.Name)
                {
                    case "type":
                        var t = ExpectString(field.Value, file, fpath, errors);
                        if (t is not null)
                        {
                            type = t switch
                            {
                                "string" => ParameterType.String,
                                "integer" => ParameterType.Integer,
                                "number" => ParameterType.Number,
                                "boolean" => ParameterType.Boolean,
                                "path" => ParameterType.Path,
                                _ => null,
                            };
                            if (type is null)
                            {
                                errors.Add(new(file, fpath, $"unknown parameter type \"{t}\"; expected one of: string, integer, number, boolean, path"));
                            }
                        }
                        break;
                    case "default":
                        defaultValue = JsonNode.Parse(field.Value.GetRawText());
                        if (defaultValue is null)
                        {
                            errors.Add(new(file, fpath, "a default may not be null; leave it out to make the parameter required"));
                        }
                        break;
                    case "description":
                        description = ExpectString(field.Value, file, fpath, errors);
                        break;
                    default:
                        errors.Add(new(file, fpath, $"unknown property \"{field.Name}\"; expected one of: type, default, description"));
                        break;
                }
            }
            if (type is null)
            {
                if (!prop.Value.TryGetProperty("type", out _))
                {
                    errors.Add(new(file, ppath, "missing required property \"type\" (string, integer, number, boolean or path)"));
                }
                continue;
            }
            if (defaultValue is not null && ParameterValues.Check(type.Value, defaultValue) is { } problem)
            {
                errors.Add(new(file, JsonPaths.Prop(ppath, "default"), problem));
            }
            parameters.Add(new ParameterDefinition(prop.Name, type.Value, defaultValue, description, ppath));
        }
    }

    private static void ReadSteps(JsonElement element, string file, string path, List<Diagnostic> errors, List<StepDefinition> steps)
    {
        if (element.ValueKind != JsonValueKind.Array)
        {
            errors.Add(new(file, path, $"expected an array of steps, got {Describe(element)}"));
            return;
        }
        var index = 0;
        foreach (var item in element.EnumerateArray())
        {
            var spath = JsonPaths.Index(path, index++);
            if (item.ValueKind != JsonValueKind.Object)
            {
                errors.Add(new(file, spath, $"expected a step object with \"id\", \"activity\" and \"inputs\", got {Describe(item)}"));
                continue;
            }
            string? id = null, activity = null, description = null;
            var inputs = new Dictionary<string, InputBinding>(StringComparer.Ordinal);
            var fields = new HashSet<string>(StringComparer.Ordinal);
            foreach (var field in item.EnumerateObject())
            {
                var fpath = JsonPaths.Prop(spath, field.Name);
                if (!fields.Add(field.Name))
                {
                    errors.Add(new(file, fpath, "duplicate property"));
                    continue;
                }
                switch (field.Name)
                {
                    case "id":
                        id = ExpectString(field.Value, file, fpath, errors);
                        if (id is not null && !IdentifierPattern().IsMatch(id))
                        {
                            errors.Add(new(file, fpath, $"invalid step id \"{id}\"; expected a letter followed by letters, digits, '_' or '-' (at most 64)"));
                        }
                        break;
                    case "activity":
                        activity = ExpectString(field.Value, file, fpath, errors);
                        break;
                    case "description":
                        description = ExpectString(field.Value, file, fpath, errors);
                        break;
                    case "inputs":
                        if (field.Value.ValueKind != JsonValueKind.Object)
                        {
                            errors.Add(new(file, fpath, $"expected an object mapping input names to values or references, got {Describe(field.Value)}"));
                            break;
                        }
                        foreach (var input in field.Value.EnumerateObject())
                        {
                            var ipath = JsonPaths.Prop(fpath, input.Name);
                            if (inputs.ContainsKey(input.Name))
                            {
                                errors.Add(new(file, ipath, "duplicate input"));
                                continue;
                            }
                            if (ReadBinding(input.Value, file, ipath, errors) is { } binding)
                            {
                                inputs[input.Name] = binding;
                            }
                        }
                        break;
                    default:
                        errors.Add(new(file, fpath, $"unknown property \"{field.Name}\"; expected one of: id, activity, description, inputs"));
                        break;
                }
            }
            if (id is null && !item.TryGetProperty("id", out _))
            {
                errors.Add(new(file, spath, "missing required property \"id\""));
            }
            if (activity is null && !item.TryGetProperty("activity", out _))
            {
                errors.Add(new(file, spath, "missing required property \"activity\""));
            }
            if (id is not null && activity is not null)
            {
                steps.Add(new StepDefinition { Id = id, Activity = activity, Description = description, Inputs = inputs, JsonPath = spath });
            }
        }
    }

    private static InputBinding? ReadBinding(JsonElement value, string file, string path, List<Diagnostic> errors)
    {
        if (value.ValueKind == JsonValueKind.Object && IsReference(value))
        {
            var prop = value.EnumerateObject().Single();
            var rpath = JsonPaths.Prop(path, prop.Name);
            if (prop.Value.ValueKind != JsonValueKind.String)
            {
                errors.Add(new(file, rpath, $"expected a string, got {Describe(prop.Value)}"));
                return null;
            }
            var text = prop.Value.GetString()!;
            if (prop.Name == "param")
            {
                return new ParameterBinding(text, path);
            }
            var dot = text.IndexOf('.');
            if (dot <= 0 || dot == text.Length - 1)
            {
                errors.Add(new(file, rpath, $"expected a reference of the form \"step.output\", got \"{text}\""));
                return null;
            }
            return new StepOutputBinding(text[..dot], text[(dot + 1)..], path);
        }
        if (value.ValueKind == JsonValueKind.Array)
        {
            var items = value.EnumerateArray().ToList();
            var refs = items.Count(i => i.ValueKind == JsonValueKind.Object && IsReference(i));
            if (refs > 0)
            {
                if (refs != items.Count)
                {
                    errors.Add(new(file, path, "a list may hold references ({ \"from\": ... }) or literal values, not both"));
                    return null;
                }
                var bindings = new List<InputBinding>();
                for (var i = 0; i < items.Count; i++)
                {
                    if (ReadBinding(items[i], file, JsonPaths.Index(path, i), errors) is { } b)
                    {
                        bindings.Add(b);
                    }
                }
                return new ListBinding(bindings, path);
            }
        }
        return new LiteralBinding(JsonNode.Parse(value.GetRawText()), path);
    }

    /// <summary>An object with exactly one property, "from" or "param", is a reference.</summary>
    private static bool IsReference(JsonElement obj)
    {
        using var e = obj.EnumerateObject();
        if (!e.MoveNext())
        {
            return false;
        }
        var first = e.Current.Name;
        return !e.MoveNext() && first is "from" or "param";
    }

    private static string? ExpectString(JsonElement value, string file, string path, List<Diagnostic> errors)
    {
        if (value.ValueKind == JsonValueKind.String)
        {
            return value.GetString();
        }
        errors.Add(new(file, path, $"expected a string, got {Describe(value)}"));
        return null;
    }

    /// <summary>Describes a JSON value for an error message: its kind and, when short, the value itself.</summary>
    public static string Describe(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => $"the string {Short(value.GetRawText())}",
        JsonValueKind.Number => $"the number {Short(value.GetRawText())}",
        JsonValueKind.True or JsonValueKind.False => $"the boolean {value.GetRawText()}",
        JsonValueKind.Null => "null",
        _ => value.ValueKind.ToString(),
    };

    /// <summary>Describes a JSON node for an error message.</summary>
    public static string Describe(JsonNode? node) => node is null ? "null" : Describe(JsonDocument.Parse(node.ToJsonString()).RootElement);

    public static string Short(string raw) => raw.Length <= 60 ? raw : raw[..57] + "...";
}
