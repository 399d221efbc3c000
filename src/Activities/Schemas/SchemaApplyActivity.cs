using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Data;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Schemas;

/// <summary>
/// Applies a given dataset schema (research §8) with a regular expression: one named group per span, matched against
/// the whole prompt, mapped to span start positions in the model's tokens and checked with the paper's rules.
/// Invalid examples are dropped and counted. For a schema drafted by an LLM, use <c>schema.generate</c>.
/// </summary>
[Activity("schema.apply", Version = 1, Category = "Schemas", Summary = "Apply a dataset schema to every example as spans, with a regular expression (one named group per span)")]
[Output("schema", ArtifactKinds.Schema, Help = "{\"Span Title\": \"description\", ...} in span order", MediaType = "application/json", FileName = "schema.json")]
[Output("dataset", ArtifactKinds.Dataset, Help = "The valid rows, each with \"spans\" ({column: first position}) and \"length\" (tokens incl. BOS)", MediaType = "application/x-ndjson", FileName = "dataset.jsonl")]
[Output("report", ArtifactKinds.Json, Help = "Validity, thresholds, rounds and the first errors", MediaType = "application/json", FileName = "schema-report.json")]
public sealed class SchemaApplyActivity : Activity<SchemaApplyActivity.Input>
{
    public sealed record Input
    {
        [Input("Rows with the prompt to partition", Kind = ArtifactKinds.Dataset)]
        public required Artifact Dataset { get; init; }

        [Input("The model under study: its tokenizer and BOS convention fix the positions", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("The schema, {\"Span Title\": \"description\", ...} in order")]
        public required JsonObject Schema { get; init; }

        [Input("A regular expression matching the whole prompt, one named group per span (title with spaces as _)")]
        public required string Pattern { get; init; }

        [Input("The row field holding the prompt")]
        public string Field { get; init; } = "clean";

        [Input("Accept empty spans")]
        public bool AllowEmpty { get; init; }

        [Input("The step fails when fewer than this fraction of the dataset's examples are valid", Minimum = 0, Maximum = 1)]
        public double MinValidFraction { get; init; } = 0.9;

        [Input("Use at most this many rows (0: all)", Minimum = 0)]
        public int Limit { get; init; }
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Pattern).NotEmpty().WithMessage("expected a regular expression with one named group per span");
            RuleFor(i => i.Pattern).Must(BeARegex).When(i => i.Pattern.Length > 0).WithMessage("not a valid regular expression");
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
        var schema = DatasetSchema.FromJson(input.Schema, "inputs.schema");
        RegexSchemaApplier applier;
        using (var lease = ModelCache.Shared.Acquire(input.Model, context.CancellationToken))
        {
            var prependBos = lease.Model.Config.DefaultPrependBos && lease.Tokenizer.BosId is not null;
            try
            {
                applier = new RegexSchemaApplier(schema, input.Pattern, lease.Tokenizer, prependBos);
            }
            catch (ArgumentException e)
            {
                throw new ActivityException($"inputs.pattern: {e.Message}");
            }
        }
        var results = await SchemaRun.ApplyAll(rows.Count, i => Task.FromResult(applier.Apply(SchemaRun.Prompt(rows[i], i, input.Field), input.AllowEmpty)), keepEmpty: false, context);
        SchemaRun.Finish(context, schema, rows, results, new JsonObject { ["generator"] = "rules" }, input.AllowEmpty, input.MinValidFraction, []);
    }
}
