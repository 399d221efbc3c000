using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Engine.Activities;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Activities.Schemas;

/// <summary>One example's application: its spans, or the reasons it is invalid.</summary>
public sealed record AppliedSchema(SpanApplication? App, List<string> Errors);

/// <summary>
/// The part both schema activities share: apply a schema to every row, keep the valid ones with their spans, and
/// write the schema, the dataset and the report (validity, thresholds, first errors). The step fails, naming the
/// first error, when fewer than the threshold's share of the rows fit.
/// </summary>
public static class SchemaRun
{
    /// <summary>The row's prompt field, or a clear error.</summary>
    public static string Prompt(JsonObject row, int i, string field) => row[field] is JsonValue v && v.TryGetValue<string>(out var s) ? s
        : throw new ActivityException($"dataset, row {i + 1}: expected a string field \"{field}\"");

    /// <summary>A prompt as the model's tokens (decoded one by one), positions offset by BOS.</summary>
    public static TokenizedExample Tokenized(string prompt, ITextTokenizer tokenizer, int first) =>
        new(prompt, tokenizer.Encode(prompt).Select(id => tokenizer.Decode([id])).ToList(), first);

    /// <summary>Applies to every row in order, with progress and cancellation. <paramref name="keepEmpty"/>: the paper keeps
    /// examples whose only error is an empty span (the LLM generator's second set of rounds).</summary>
    public static async Task<List<AppliedSchema>> ApplyAll(int count, Func<int, Task<(SpanApplication?, List<string>)>> apply, bool keepEmpty, ActivityContext context)
    {
        var results = new List<AppliedSchema>(count);
        for (var i = 0; i < count; i++)
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            var (app, errors) = await apply(i);
            if (keepEmpty && app is not null && errors.Count == 1 && errors[0].StartsWith(SpanValidator.EmptySpans, StringComparison.Ordinal))
            {
                errors = [];
            }
            results.Add(new AppliedSchema(app, errors));
            if ((i + 1) % 50 == 0 || i + 1 == count)
            {
                context.Report((i + 1) / (double)count, $"{i + 1} of {count} examples");
            }
        }
        return results;
    }

    /// <summary>Writes the three outputs (report first, so a failed step still explains itself in its log).</summary>
    public static void Finish(ActivityContext context, DatasetSchema schema, List<JsonObject> rows, List<AppliedSchema> results,
        JsonObject report, bool allowEmpty, double minValidFraction, JsonObject thresholds)
    {
        var valid = new List<JsonObject>();
        var errors = new JsonArray();
        for (var i = 0; i < rows.Count; i++)
        {
            if (results[i].App is { } app && results[i].Errors.Count == 0)
            {
                var row = rows[i].DeepClone().AsObject();
                app.WriteTo(row, schema);
                valid.Add(row);
            }
            else if (errors.Count < 20)
            {
                errors.Add(new JsonObject { ["row"] = i + 1, ["errors"] = new JsonArray(results[i].Errors.Select(e => (JsonNode)e).ToArray()) });
            }
        }
        var fraction = rows.Count == 0 ? 0 : (double)valid.Count / rows.Count;
        report["spans"] = schema.Count;
        report["examples"] = rows.Count;
        report["valid"] = valid.Count;
        report["dropped"] = rows.Count - valid.Count;
        report["validFraction"] = Math.Round(fraction, 4);
        report["allowEmpty"] = allowEmpty;
        thresholds["minValidFraction"] = minValidFraction;
        report["thresholds"] = thresholds;
        report["accepted"] = fraction >= minValidFraction;
        report["firstErrors"] = errors;
        File.WriteAllText(context.OutputFile("report"), report.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
        if (fraction < minValidFraction)
        {
            var firstError = errors.FirstOrDefault() is JsonObject e ? $"row {e["row"]}: {e["errors"]?[0]}" : "no rows";
            throw new ActivityException($"only {valid.Count} of {rows.Count} examples ({LlmSchemaGenerator.Percent(fraction)}) fit the schema; the threshold is {LlmSchemaGenerator.Percent(minValidFraction)}. First error, {firstError}");
        }
        File.WriteAllText(context.OutputFile("schema"), schema.ToJson().ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
        Jsonl.Write(context.OutputFile("dataset"), valid);
        context.Log($"schema of {schema.Count} spans: {valid.Count} of {rows.Count} examples valid ({LlmSchemaGenerator.Percent(fraction)}), {rows.Count - valid.Count} dropped");
    }
}
