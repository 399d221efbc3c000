using System.Reflection;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Pipelines.Engine.Activities;

/// <summary>Builds an <see cref="ActivityDescriptor"/> by reflection over an activity class and its input record.</summary>
public static class DescriptorBuilder
{
    /// <summary>Builds the descriptor; throws when the activity is declared wrongly (a programming error).</summary>
    public static ActivityDescriptor Build(Type activityType, Type inputType)
    {
        var attr = activityType.GetCustomAttribute<ActivityAttribute>()
            ?? throw new InvalidOperationException($"{activityType.Name} lacks [Activity]");
        var outputs = activityType.GetCustomAttributes<OutputAttribute>()
            .Select(o => new OutputPortDescriptor(o.Name, o.Kind, o.MediaType, o.Help, o.FileName, o.IsDirectory))
            .ToList();
        var defaults = Activator.CreateInstance(inputType)
            ?? throw new InvalidOperationException($"{inputType.Name} needs a parameterless constructor");
        var inputs = new List<InputPortDescriptor>();
        foreach (var prop in InputProperties(inputType))
        {
            var input = prop.GetCustomAttribute<InputAttribute>()
                ?? throw new InvalidOperationException($"{inputType.Name}.{prop.Name} lacks [Input(help)]");
            var type = MapType(prop, input);
            var required = prop.GetCustomAttribute<RequiredMemberAttribute>() is not null;
            JsonNode? defaultValue = null;
            if (!required && !type.IsArtifact)
            {
                var value = prop.GetValue(defaults);
                defaultValue = value is null ? null : JsonSerializer.SerializeToNode(value, prop.PropertyType, InputBinder.JsonOptions);
            }
            var enumType = Nullable.GetUnderlyingType(prop.PropertyType) ?? prop.PropertyType;
            IReadOnlyList<string>? allowed = enumType.IsEnum
                ? Enum.GetNames(enumType).Select(n => JsonNamingPolicy.KebabCaseLower.ConvertName(n)).ToList()
                : null;
            inputs.Add(new InputPortDescriptor(
                PortName(prop),
                type,
                required,
                defaultValue,
                input.Help,
                allowed,
                double.IsNaN(input.Minimum) ? null : input.Minimum,
                double.IsNaN(input.Maximum) ? null : input.Maximum,
                input.PathKind));
        }
        return new ActivityDescriptor(attr.Type, attr.Version, attr.Category, attr.Summary, inputs, outputs, attr.Resources, attr.Settings);
    }

    internal static IEnumerable<PropertyInfo> InputProperties(Type inputType) =>
        inputType.GetProperties(BindingFlags.Public | BindingFlags.Instance).Where(p => p.CanWrite && p.GetCustomAttribute<InputAttribute>() is not null);

    internal static string PortName(PropertyInfo prop) => JsonNamingPolicy.CamelCase.ConvertName(prop.Name);

    private static PortType MapType(PropertyInfo prop, InputAttribute input)
    {
        var t = Nullable.GetUnderlyingType(prop.PropertyType) ?? prop.PropertyType;
        if (t == typeof(Artifact))
        {
            return new PortType(PortValueKind.Artifact, false, input.Kind ?? throw Missing(prop));
        }
        if (t == typeof(IReadOnlyList<Artifact>))
        {
            return new PortType(PortValueKind.Artifact, true, input.Kind ?? throw Missing(prop));
        }
        if (t == typeof(string))
        {
            return new PortType(input.IsPath ? PortValueKind.Path : PortValueKind.String);
        }
        if (t.IsEnum)
        {
            return new PortType(PortValueKind.String);
        }
        if (t == typeof(int) || t == typeof(long))
        {
            return new PortType(PortValueKind.Integer);
        }
        if (t == typeof(double) || t == typeof(float))
        {
            return new PortType(PortValueKind.Number);
        }
        if (t == typeof(bool))
        {
            return new PortType(PortValueKind.Boolean);
        }
        if (t == typeof(JsonNode) || t == typeof(JsonObject))
        {
            return new PortType(PortValueKind.Json);
        }
        if (t == typeof(IReadOnlyList<string>) || t == typeof(string[]))
        {
            return new PortType(PortValueKind.String, true);
        }
        if (t == typeof(IReadOnlyList<int>) || t == typeof(int[]) || t == typeof(IReadOnlyList<long>))
        {
            return new PortType(PortValueKind.Integer, true);
        }
        if (t == typeof(IReadOnlyList<double>) || t == typeof(double[]))
        {
            return new PortType(PortValueKind.Number, true);
        }
        throw new InvalidOperationException($"{prop.DeclaringType?.Name}.{prop.Name}: unsupported input type {t.Name}");
    }

    private static InvalidOperationException Missing(PropertyInfo prop) =>
        new($"{prop.DeclaringType?.Name}.{prop.Name}: artifact inputs need [Input(Kind = ...)]");
}
