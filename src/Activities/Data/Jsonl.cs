using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Data;

/// <summary>Reading and writing JSONL datasets: one JSON object per line.</summary>
public static class Jsonl
{
    /// <summary>Reads every non-blank line as a JSON object; a bad line fails with its file and line number.</summary>
    public static List<JsonObject> Read(string path, string displayName, ActivityContext? context = null, int limit = 0)
    {
        var result = new List<JsonObject>();
        var length = new FileInfo(path).Length;
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        var lineNumber = 0;
        while (reader.ReadLine() is { } line)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line))
            {
                continue;
            }
            JsonNode? node;
            try
            {
                node = JsonNode.Parse(line);
            }
            catch (JsonException e)
            {
                throw new ActivityException($"{displayName}, line {lineNumber}: invalid JSON ({e.Message.Split(" Path:")[0].Split(" LineNumber:")[0].TrimEnd('.')}); expected one JSON object per line");
            }
            if (node is not JsonObject obj)
            {
                throw new ActivityException($"{displayName}, line {lineNumber}: expected a JSON object, got {(node is null ? "null" : node.GetValueKind().ToString().ToLowerInvariant())}");
            }
            result.Add(obj);
            if (limit > 0 && result.Count >= limit)
            {
                break;
            }
            if ((lineNumber & 0xFFF) == 0)
            {
                context?.CancellationToken.ThrowIfCancellationRequested();
                context?.Report(length == 0 ? null : (double)stream.Position / length, $"{result.Count:N0} examples");
            }
        }
        return result;
    }

    /// <summary>Writes compact JSON, one object per line, '\n' endings: the same examples always give the same bytes.</summary>
    public static void Write(string path, IEnumerable<JsonObject> rows)
    {
        using var writer = new StreamWriter(path, false, new UTF8Encoding(false)) { NewLine = "\n" };
        foreach (var row in rows)
        {
            writer.WriteLine(row.ToJsonString());
        }
    }
}
