using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Pipelines.Engine.Activities;

/// <summary>Turns resolved port values into an activity's typed input record.</summary>
public static class InputBinder
{
    /// <summary>The JSON conventions of workflow files: camelCase names, kebab-case enum values.</summary>
    public static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower, allowIntegerValues: false) },
    };

    /// <summary>Creates the input record: value ports from <paramref name="values"/>, artifact ports from <paramref name="artifacts"/>.</summary>
    public static object Bind(Type inputType, IReadOnlyDictionary<string, JsonNode?> values, IReadOnlyDictionary<string, object> artifacts)
    {
        var instance = Activator.CreateInstance(inputType)!;
        foreach (var prop in DescriptorBuilder.InputProperties(inputType))
        {
            var name = DescriptorBuilder.PortName(prop);
            if (artifacts.TryGetValue(name, out var artifact))
            {
                prop.SetValue(instance, artifact);
            }
            else if (values.TryGetValue(name, out var node) && node is not null)
            {
                prop.SetValue(instance, node.Deserialize(prop.PropertyType, JsonOptions));
            }
        }
        return instance;
    }
}
