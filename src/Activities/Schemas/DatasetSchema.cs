using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Schemas;

/// <summary>One span of a schema: a short title and the role it plays, with examples.</summary>
public sealed record SchemaSpan(string Title, string Description)
{
    /// <summary>The title as a column or regex group name: spaces become "_" (PEAP's CSV convention).</summary>
    public string Column => Title.Trim().Replace(' ', '_');
}

/// <summary>
/// A dataset schema (research §8): an ordered list of named, described spans that partitions every example's tokens
/// in the same order, with the final token alone in the last span. Its JSON is the paper's
/// <c>{"Span Title": "description", ...}</c>, key order = span order; duplicate titles become "Title 1", "Title 2".
/// </summary>
public sealed class DatasetSchema
{
    public DatasetSchema(IReadOnlyList<SchemaSpan> spans)
    {
        if (spans.Count == 0)
        {
            throw new ArgumentException("a schema needs at least one span");
        }
        Spans = spans;
    }

    public IReadOnlyList<SchemaSpan> Spans { get; }

    public int Count => Spans.Count;

    public JsonObject ToJson()
    {
        var o = new JsonObject();
        foreach (var s in Spans)
        {
            o[s.Title] = s.Description;
        }
        return o;
    }

    public static DatasetSchema FromJson(JsonObject json, string where)
    {
        var spans = new List<SchemaSpan>();
        foreach (var (title, value) in json)
        {
            spans.Add(new SchemaSpan(title, value is JsonValue v && v.TryGetValue<string>(out var s) ? s
                : throw new ActivityException($"{where}.{title}: expected the span's description as a string")));
        }
        return spans.Count > 0 ? new DatasetSchema(spans) : throw new ActivityException($"{where}: expected at least one span");
    }

    /// <summary>
    /// Parses a schema from model output: the first JSON object in <paramref name="text"/>, keeping key order and
    /// renaming duplicate keys "Key 1", "Key 2", as the paper's code does. Null when there is no such object.
    /// </summary>
    public static DatasetSchema? Parse(string text)
    {
        var pairs = ReadObject(text);
        if (pairs is null || pairs.Count == 0)
        {
            return null;
        }
        var counts = pairs.GroupBy(p => p.Key).ToDictionary(g => g.Key, g => g.Count());
        var seen = new Dictionary<string, int>();
        var spans = new List<SchemaSpan>();
        foreach (var (key, value) in pairs)
        {
            var title = key;
            if (counts[key] > 1)
            {
                seen[key] = seen.GetValueOrDefault(key) + 1;
                title = $"{key} {seen[key]}";
            }
            spans.Add(new SchemaSpan(title, value.ValueKind == JsonValueKind.String ? value.GetString()! : value.GetRawText()));
        }
        return new DatasetSchema(spans);
    }

    /// <summary>The properties of the first top-level JSON object in <paramref name="text"/>, in order, duplicates kept.</summary>
    public static List<KeyValuePair<string, JsonElement>>? ReadObject(string text)
    {
        var start = text.IndexOf('{');
        while (start >= 0)
        {
            try
            {
                var bytes = Encoding.UTF8.GetBytes(text[start..]);
                var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
                reader.Read();
                var pairs = new List<KeyValuePair<string, JsonElement>>();
                while (reader.Read() && reader.TokenType != JsonTokenType.EndObject)
                {
                    var key = reader.GetString()!;
                    reader.Read();
                    pairs.Add(new(key, JsonElement.ParseValue(ref reader)));
                }
                return reader.TokenType == JsonTokenType.EndObject ? pairs : null;
            }
            catch (JsonException)
            {
                start = text.IndexOf('{', start + 1);
            }
        }
        return null;
    }
}
