using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Data;
using Pipelines.Activities.Models;
using Pipelines.Engine.Activities;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Activities.Schemas;

/// <summary>How <c>schema.generate</c> finds the spans.</summary>
public enum SchemaGenerator { Rules, Llm }

/// <summary>
/// Dataset schemas for variable-length examples (research §8): generates or takes a schema, applies it to every
/// example as span start positions in the model's tokens, validates each application with the paper's rules and
/// reports the acceptance thresholds. Invalid examples are dropped and counted.
/// </summary>
[Activity("schema.generate", Version = 1, Category = "Circuits", Settings = ["PIPELINES_LLM_ENDPOINT", "PIPELINES_LLM_MODEL"], Summary = "Generate a dataset schema (rules or an LLM) and apply it to every example as spans")]
[Output("schema", ArtifactKinds.Schema, Help = "{\"Span Title\": \"description\", ...} in span order", MediaType = "application/json", FileName = "schema.json")]
[Output("dataset", ArtifactKinds.Dataset, Help = "The valid rows, each with \"spans\" ({column: first position}) and \"length\" (tokens incl. BOS)", MediaType = "application/x-ndjson", FileName = "dataset.jsonl")]
[Output("report", ArtifactKinds.Json, Help = "Validity, thresholds, rounds and the first errors", MediaType = "application/json", FileName = "schema-report.json")]
public sealed class SchemaGenerateActivity : Activity<SchemaGenerateActivity.Input>
{
    public sealed record Input
    {
        [Input("Rows with the prompt to partition", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("The model under study: its tokenizer and BOS convention fix the positions", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("rules (a schema and a regular expression) or llm (an OpenAI-compatible endpoint or a local chat model)")]
        public SchemaGenerator Generator { get; init; } = SchemaGenerator.Rules;

        [Input("The schema, {\"Span Title\": \"description\", ...} in order. Required for rules; for llm, skips drafting")]
        public JsonObject? Schema { get; init; }

        [Input("rules: a regular expression matching the whole prompt, one named group per span (title with spaces as _)")]
        public string Pattern { get; init; } = "";

        [Input("The row field holding the prompt")]
        public string Field { get; init; } = "clean";

        [Input("Accept empty spans (rules; the llm generator allows them only in its second set of rounds)")]
        public bool AllowEmpty { get; init; }

        [Input("llm: base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1 (default: $PIPELINES_LLM_ENDPOINT)")]
        public string Endpoint { get; init; } = "";

        [Input("llm: the endpoint's model name (default: $PIPELINES_LLM_MODEL)")]
        public string LlmModel { get; init; } = "";

        [Input("llm: the environment variable holding the endpoint's API key (one of the allowed names: OPENAI_API_KEY, ANTHROPIC_API_KEY, PIPELINES_LLM_API_KEY, or those in PIPELINES_SECRET_VARIABLES)")]
        public string ApiKeyVariable { get; init; } = "OPENAI_API_KEY";

        [Input("llm: a local instruction-tuned checkpoint to use instead of an endpoint", Kind = ArtifactKinds.Model)]
        public Artifact? Assistant { get; init; }

        [Input("llm: the most tokens per answer (the paper: 1000)", Minimum = 1, Maximum = 100000)]
        public int MaxTokens { get; init; } = 1000;

        [Input("llm: examples shown to draft the schema (batches of 5)", Minimum = 1, Maximum = 100)]
        public int Examples { get; init; } = 15;

        [Input("llm: calls per example application before it counts as invalid", Minimum = 1, Maximum = 10)]
        public int Attempts { get; init; } = 3;

        [Input("llm: drafting rounds without, then with, empty spans", Minimum = 1, Maximum = 20)]
        public int Rounds { get; init; } = 5;

        [Input("llm: a draft is accepted when at most this fraction of its drafting examples is invalid", Minimum = 0, Maximum = 1)]
        public double MaxErrorRate { get; init; } = 0.2;

        [Input("The step fails when fewer than this fraction of the dataset's examples are valid", Minimum = 0, Maximum = 1)]
        public double MinValidFraction { get; init; } = 0.9;

        [Input("Use at most this many rows (0: all)", Minimum = 0)]
        public int Limit { get; init; }
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Schema).NotNull().When(i => i.Generator == SchemaGenerator.Rules)
                .WithMessage("the rules generator needs a schema: {\"Span Title\": \"description\", ...}");
            RuleFor(i => i.Pattern).NotEmpty().When(i => i.Generator == SchemaGenerator.Rules)
                .WithMessage("the rules generator needs a pattern: a regular expression with one named group per span");
            RuleFor(i => i.Pattern).Must(BeARegex).When(i => i.Pattern.Length > 0).WithMessage("not a valid regular expression");
            RuleFor(i => i.ApiKeyVariable).Must(v => RemoteEndpoints.CheckKeyVariable(v) is null).WithMessage(i => RemoteEndpoints.CheckKeyVariable(i.ApiKeyVariable)!);
            RuleFor(i => i.Endpoint).Must(e => RemoteEndpoints.CheckEndpoint(e) is null).WithMessage(i => RemoteEndpoints.CheckEndpoint(i.Endpoint)!);
        }

        private static bool BeARegex(string pattern)
        {
            try
            {
                _ = new System.Text.RegularExpressions.Regex(pattern);
                return true;
            }
            catch (ArgumentException)
            {
                return false;
            }
        }
    }

    protected override async Task ExecuteAsync(Input input, ActivityContext context)
    {
        var rows = Jsonl.Read(input.Dataset.Path, "dataset", context, input.Limit);
        bool prependBos;
        ITextTokenizer tokenizer;
        using (var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken))
        {
            tokenizer = lease.Tokenizer;
            prependBos = lease.Model.Config.DefaultPrependBos && tokenizer.BosId is not null;
        }
        var first = prependBos ? 1 : 0;
        string Prompt(JsonObject row, int i) => row[input.Field] is JsonValue v && v.TryGetValue<string>(out var s) ? s
            : throw new ActivityException($"dataset, row {i + 1}: expected a string field \"{input.Field}\"");

        DatasetSchema schema;
        var allowEmpty = input.AllowEmpty;
        Func<int, Task<(SpanApplication? App, List<string> Errors)>> apply;
        var report = new JsonObject { ["generator"] = input.Generator == SchemaGenerator.Rules ? "rules" : "llm" };
        if (input.Generator == SchemaGenerator.Rules)
        {
            schema = DatasetSchema.FromJson(input.Schema!, "inputs.schema");
            RegexSchemaApplier applier;
            try
            {
                applier = new RegexSchemaApplier(schema, input.Pattern, tokenizer, prependBos);
            }
            catch (ArgumentException e)
            {
                throw new ActivityException($"inputs.pattern: {e.Message}");
            }
            apply = i => Task.FromResult(applier.Apply(Prompt(rows[i], i), allowEmpty));
        }
        else
        {
            var (client, dispose) = OpenClient(input);
            using var _ = dispose;
            var generator = new LlmSchemaGenerator(client, new SchemaThresholds
            {
                Examples = input.Examples, Attempts = input.Attempts, Rounds = input.Rounds, MaxErrorRate = input.MaxErrorRate,
            }, context.Log);
            var examples = rows.Select((r, i) => Tokenized(Prompt(r, i), tokenizer, first)).ToList();
            if (input.Schema is not null)
            {
                schema = DatasetSchema.FromJson(input.Schema, "inputs.schema");
            }
            else
            {
                context.Report(0, "drafting a schema");
                (schema, allowEmpty) = await generator.GenerateAsync(examples, context.CancellationToken);
            }
            apply = async i =>
            {
                var (app, errors, _) = await generator.ApplyAsync(schema, examples[i], true, context.CancellationToken);
                return (app, errors);
            };
            var results = await ApplyAll(rows, schema, apply, first, keepEmpty: true, context);
            report["llm"] = client.Name;
            report["calls"] = generator.Calls;
            report["rounds"] = new JsonArray(generator.Rounds.Select(r => (JsonNode)new JsonObject
            {
                ["round"] = r.Round, ["allowEmpty"] = r.AllowEmpty, ["valid"] = r.Valid, ["tried"] = r.Tried, ["rejected"] = r.Rejected,
            }).ToArray());
            Finish(input, context, schema, rows, results, report, allowEmpty);
            return;
        }
        var ruled = await ApplyAll(rows, schema, apply, first, keepEmpty: false, context);
        Finish(input, context, schema, rows, ruled, report, allowEmpty);
    }

    private static TokenizedExample Tokenized(string prompt, ITextTokenizer tokenizer, int first) =>
        new(prompt, tokenizer.Encode(prompt).Select(id => tokenizer.Decode([id])).ToList(), first);

    private static (IChatClient Client, IDisposable? Dispose) OpenClient(Input input)
    {
        if (input.Assistant is { } assistant)
        {
            var lease = ModelCache.Shared.Acquire(assistant);
            var (model, tokenizer) = lease;
            return (new LocalChatClient(model, tokenizer, ChatTemplates.ForArchitecture(model.Config.Architecture), assistant.Digest[..12], input.MaxTokens), lease);
        }
        var endpoint = input.Endpoint.Length > 0 ? input.Endpoint : Environment.GetEnvironmentVariable("PIPELINES_LLM_ENDPOINT") ?? "";
        if (endpoint.Length == 0)
        {
            throw new ActivityException("the llm generator needs an endpoint (inputs.endpoint or $PIPELINES_LLM_ENDPOINT: an OpenAI-compatible base URL) or a local assistant model (inputs.assistant)");
        }
        if ((RemoteEndpoints.CheckEndpoint(endpoint) ?? RemoteEndpoints.CheckKeyVariable(input.ApiKeyVariable)) is { } refused)
        {
            throw new ActivityException($"inputs.endpoint: {refused}"); // checked again here: the default endpoint comes from the environment
        }
        var uri = new Uri(endpoint);
        var model2 = input.LlmModel.Length > 0 ? input.LlmModel : Environment.GetEnvironmentVariable("PIPELINES_LLM_MODEL") ?? "gpt-4o";
        var http = new HttpClient { Timeout = TimeSpan.FromMinutes(5) };
        return (new OpenAiChatClient(http, uri, model2, Environment.GetEnvironmentVariable(input.ApiKeyVariable), input.MaxTokens), http);
    }

    private sealed record Applied(SpanApplication? App, List<string> Errors);

    private static async Task<List<Applied>> ApplyAll(List<JsonObject> rows, DatasetSchema schema, Func<int, Task<(SpanApplication?, List<string>)>> apply, int first, bool keepEmpty, ActivityContext context)
    {
        var results = new List<Applied>(rows.Count);
        for (var i = 0; i < rows.Count; i++)
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            var (app, errors) = await apply(i);
            // The paper keeps examples whose only error is an empty span.
            if (keepEmpty && app is not null && errors.Count == 1 && errors[0].StartsWith(SpanValidator.EmptySpans, StringComparison.Ordinal))
            {
                errors = [];
            }
            results.Add(new Applied(app, errors));
            if ((i + 1) % 50 == 0 || i + 1 == rows.Count)
            {
                context.Report((i + 1) / (double)rows.Count, $"{i + 1} of {rows.Count} examples");
            }
        }
        return results;
    }

    private static void Finish(Input input, ActivityContext context, DatasetSchema schema, List<JsonObject> rows, List<Applied> results, JsonObject report, bool allowEmpty)
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
        report["thresholds"] = new JsonObject
        {
            ["minValidFraction"] = input.MinValidFraction,
            ["maxDraftErrorRate"] = input.MaxErrorRate,
            ["attemptsPerExample"] = input.Attempts,
            ["draftExamples"] = input.Examples,
            ["rounds"] = input.Rounds,
        };
        report["accepted"] = fraction >= input.MinValidFraction;
        report["firstErrors"] = errors;
        File.WriteAllText(context.OutputFile("report"), report.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
        if (fraction < input.MinValidFraction)
        {
            var firstError = errors.FirstOrDefault() is JsonObject e ? $"row {e["row"]}: {e["errors"]?[0]}" : "no rows";
            throw new ActivityException($"only {valid.Count} of {rows.Count} examples ({LlmSchemaGenerator.Percent(fraction)}) fit the schema; the threshold is {LlmSchemaGenerator.Percent(input.MinValidFraction)}. First error, {firstError}");
        }
        File.WriteAllText(context.OutputFile("schema"), schema.ToJson().ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) + "\n");
        Jsonl.Write(context.OutputFile("dataset"), valid);
        context.Log($"schema of {schema.Count} spans: {valid.Count} of {rows.Count} examples valid ({LlmSchemaGenerator.Percent(fraction)}), {rows.Count - valid.Count} dropped");
    }
}
