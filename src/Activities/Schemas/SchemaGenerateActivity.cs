using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Data;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Activities.Schemas;

/// <summary>
/// Dataset schemas drafted by an LLM (research §8, PEAP's pipeline): drafts a schema from batches of examples,
/// unifies the drafts, then applies it to every example with the validator in the loop (invalid answers are sent
/// back with the errors), through an OpenAI-compatible endpoint or a local chat model. Invalid examples are dropped
/// and counted. With a known schema and a regular expression, use <c>schema.apply</c>.
/// </summary>
[Activity("schema.generate", Version = 2, Category = "Schemas", Settings = ["PIPELINES_LLM_ENDPOINT", "PIPELINES_LLM_MODEL"], Summary = "Draft a dataset schema with an LLM (endpoint or local model) and apply it to every example as spans")]
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

        [Input("A known schema, {\"Span Title\": \"description\", ...} in order: skips drafting; the LLM only applies it")]
        public JsonObject? Schema { get; init; }

        [Input("The row field holding the prompt")]
        public string Field { get; init; } = "clean";

        [Input("base URL of an OpenAI-compatible API, e.g. http://localhost:8000/v1 (default: $PIPELINES_LLM_ENDPOINT)")]
        public string Endpoint { get; init; } = "";

        [Input("the endpoint's model name (default: $PIPELINES_LLM_MODEL)")]
        public string LlmModel { get; init; } = "";

        [Input("the environment variable holding the endpoint's API key (one of the allowed names: OPENAI_API_KEY, ANTHROPIC_API_KEY, PIPELINES_LLM_API_KEY, or those in PIPELINES_SECRET_VARIABLES)")]
        public string ApiKeyVariable { get; init; } = "OPENAI_API_KEY";

        [Input("a local instruction-tuned checkpoint to use instead of an endpoint", Kind = ArtifactKinds.Model)]
        public Artifact? Assistant { get; init; }

        [Input("the most tokens per answer (the paper: 1000)", Minimum = 1, Maximum = 100000)]
        public int MaxTokens { get; init; } = 1000;

        [Input("examples shown to draft the schema (batches of 5)", Minimum = 1, Maximum = 100)]
        public int Examples { get; init; } = 15;

        [Input("calls per example application before it counts as invalid", Minimum = 1, Maximum = 10)]
        public int Attempts { get; init; } = 3;

        [Input("drafting rounds without, then with, empty spans", Minimum = 1, Maximum = 20)]
        public int Rounds { get; init; } = 5;

        [Input("a draft is accepted when at most this fraction of its drafting examples is invalid", Minimum = 0, Maximum = 1)]
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
            RuleFor(i => i.ApiKeyVariable).Must(v => RemoteEndpoints.CheckKeyVariable(v) is null).WithMessage(i => RemoteEndpoints.CheckKeyVariable(i.ApiKeyVariable)!);
            RuleFor(i => i.Endpoint).Must(e => RemoteEndpoints.CheckEndpoint(e) is null).WithMessage(i => RemoteEndpoints.CheckEndpoint(i.Endpoint)!);
        }
    }

    protected override async Task ExecuteAsync(Input input, ActivityContext context)
    {
        var rows = Jsonl.Read(input.Dataset.Path, "dataset", context, input.Limit);
        List<TokenizedExample> examples;
        using (var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken))
        {
            var first = lease.Model.Config.DefaultPrependBos && lease.Tokenizer.BosId is not null ? 1 : 0;
            examples = rows.Select((r, i) => SchemaRun.Tokenized(SchemaRun.Prompt(r, i, input.Field), lease.Tokenizer, first)).ToList();
        }
        var (client, dispose) = OpenClient(input);
        using var _ = dispose;
        var generator = new LlmSchemaGenerator(client, new SchemaThresholds
        {
            Examples = input.Examples, Attempts = input.Attempts, Rounds = input.Rounds, MaxErrorRate = input.MaxErrorRate,
        }, context.Log);
        DatasetSchema schema;
        var allowEmpty = false;
        if (input.Schema is not null)
        {
            schema = DatasetSchema.FromJson(input.Schema, "inputs.schema");
        }
        else
        {
            context.Report(0, "drafting a schema");
            (schema, allowEmpty) = await generator.GenerateAsync(examples, context.CancellationToken);
        }
        var results = await SchemaRun.ApplyAll(rows.Count, async i =>
        {
            var (app, errors, _) = await generator.ApplyAsync(schema, examples[i], true, context.CancellationToken);
            return (app, errors);
        }, keepEmpty: true, context);
        var report = new JsonObject
        {
            ["generator"] = "llm",
            ["llm"] = client.Name,
            ["calls"] = generator.Calls,
            ["rounds"] = new JsonArray(generator.Rounds.Select(r => (JsonNode)new JsonObject
            {
                ["round"] = r.Round, ["allowEmpty"] = r.AllowEmpty, ["valid"] = r.Valid, ["tried"] = r.Tried, ["rejected"] = r.Rejected,
            }).ToArray()),
        };
        SchemaRun.Finish(context, schema, rows, results, report, allowEmpty, input.MinValidFraction, new JsonObject
        {
            ["maxDraftErrorRate"] = input.MaxErrorRate, ["attemptsPerExample"] = input.Attempts, ["draftExamples"] = input.Examples, ["rounds"] = input.Rounds,
        });
    }

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
            throw new ActivityException("schema.generate needs an endpoint (inputs.endpoint or $PIPELINES_LLM_ENDPOINT: an OpenAI-compatible base URL) or a local assistant model (inputs.assistant)");
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
}
