using System.Text;
using System.Text.Json;
using Pipelines.Engine.Activities;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Activities.Schemas;

/// <summary>An example as the LLM sees it: its tokens as strings (without BOS) and the first real position.</summary>
public sealed record TokenizedExample(string Prompt, IReadOnlyList<string> Tokens, int First);

/// <summary>The thresholds of the paper's pipeline (research §8); all are inputs of <c>schema.generate</c>.</summary>
public sealed record SchemaThresholds
{
    /// <summary>Examples shown to the LLM to draft the schema (the paper: 15, in batches of 5).</summary>
    public int Examples { get; init; } = 15;
    public int BatchSize { get; init; } = 5;
    /// <summary>Tries per example application, the validator's errors fed back after each failure.</summary>
    public int Attempts { get; init; } = 3;
    /// <summary>A draft schema is accepted when at most this fraction of its applications fail.</summary>
    public double MaxErrorRate { get; init; } = 0.2;
    /// <summary>Rounds of regeneration with empty spans disallowed, then as many with them allowed.</summary>
    public int Rounds { get; init; } = 5;
    /// <summary>The whole dataset's application succeeds when at least this fraction is valid.</summary>
    public double MinValidFraction { get; init; } = 0.9;
}

/// <summary>One schema-drafting round, for the report.</summary>
public sealed record SchemaRound(int Round, bool AllowEmpty, int Valid, int Tried, string? Rejected);

/// <summary>
/// The LLM-driven generator (research §8, after PEAP's <c>SchemaGenerator</c>): draft a schema per batch of examples,
/// unify the drafts, apply the unified schema to the drafting examples with the validator in the loop, and accept it
/// when few enough applications fail; otherwise regenerate, telling the LLM what went wrong. Applying the accepted
/// schema to the dataset uses the same validate-and-retry loop, one call per example.
/// </summary>
public sealed class LlmSchemaGenerator(IChatClient client, SchemaThresholds thresholds, Action<string>? log = null)
{
    private const string System = "You are a precise interpretability researcher. You partition prompts into spans of tokens that play the same role in every example, so that a circuit can be found per span. You answer with JSON only.";

    private const string Guidelines = """
        Guidelines:
        - The schema is a complete, chronological partition of every example: every token belongs to exactly one span, spans keep the prompt's order.
        - Use syntax and semantics: a span groups tokens with one role (a subject, a verb, a name, a number, a connector...).
        - The final token is alone in the last span.
        - The schema is consistent across the whole dataset: generalise over the examples, do not describe one example.
        - Span titles have 1 to 3 words.
        """;

    public List<SchemaRound> Rounds { get; } = [];

    public int Calls { get; private set; }

    /// <summary>Drafts, unifies and checks schemas until one is accepted; throws when every round fails.</summary>
    public async Task<(DatasetSchema Schema, bool AllowEmpty)> GenerateAsync(IReadOnlyList<TokenizedExample> examples, CancellationToken ct)
    {
        var sample = examples.Take(thresholds.Examples).ToList();
        if (sample.Count == 0)
        {
            throw new ActivityException("no examples to draft a schema from");
        }
        string? feedback = null;
        for (var round = 1; round <= 2 * thresholds.Rounds; round++)
        {
            var allowEmpty = round > thresholds.Rounds;
            var drafts = new List<DatasetSchema>();
            foreach (var batch in sample.Chunk(thresholds.BatchSize))
            {
                var draft = DatasetSchema.Parse(await Ask(DraftPrompt(batch), ct));
                if (draft is not null)
                {
                    drafts.Add(draft);
                }
            }
            var unified = DatasetSchema.Parse(await Ask(UnifyPrompt(drafts, sample, feedback), ct));
            if (unified is null)
            {
                feedback = "Your last answer was not a JSON object of span titles to descriptions.";
                Rounds.Add(new SchemaRound(round, allowEmpty, 0, 0, feedback));
                continue;
            }
            var valid = 0;
            var tried = 0;
            var errors = new List<string>();
            foreach (var example in sample)
            {
                tried++;
                var (app, errs, _) = await ApplyAsync(unified, example, allowEmpty, ct);
                if (app is not null && errs.Count == 0)
                {
                    valid++;
                }
                else
                {
                    errors.AddRange(errs.Select(e => $"\"{example.Prompt}\": {e}"));
                }
                if (tried - valid > thresholds.MaxErrorRate * sample.Count)
                {
                    break; // abort early: this schema cannot reach the threshold any more
                }
            }
            var rate = 1.0 - (double)valid / sample.Count;
            if (tried == sample.Count && rate <= thresholds.MaxErrorRate)
            {
                Rounds.Add(new SchemaRound(round, allowEmpty, valid, tried, null));
                log?.Invoke($"round {round}: schema accepted, {valid} of {sample.Count} drafting examples valid");
                return (unified, allowEmpty);
            }
            feedback = "The previous schema failed on these examples:\n" + string.Join("\n", errors.Take(10));
            Rounds.Add(new SchemaRound(round, allowEmpty, valid, tried, errors.FirstOrDefault()));
            log?.Invoke($"round {round}: schema rejected ({valid} of {tried} tried valid)");
        }
        throw new ActivityException($"no schema met the threshold (at most {Percent(thresholds.MaxErrorRate)} of {sample.Count} drafting examples invalid) in {2 * thresholds.Rounds} rounds; last error: {Rounds.LastOrDefault()?.Rejected}");
    }

    /// <summary>Applies <paramref name="schema"/> to one example: up to <see cref="SchemaThresholds.Attempts"/> calls, errors fed back.</summary>
    public async Task<(SpanApplication? App, List<string> Errors, int Attempts)> ApplyAsync(DatasetSchema schema, TokenizedExample example, bool allowEmpty, CancellationToken ct)
    {
        List<string> errors = [];
        SpanApplication? app = null;
        var messages = new List<ChatMessage> { new("system", System), new("user", ApplyPrompt(schema, example)) };
        for (var attempt = 1; attempt <= thresholds.Attempts; attempt++)
        {
            var answer = await Ask(messages, ct);
            (app, errors) = SpanValidator.FromTokenLists(schema, answer, example.Tokens, example.First, allowEmpty);
            if (app is not null && errors.Count == 0)
            {
                return (app, errors, attempt);
            }
            messages.Add(new ChatMessage("assistant", answer));
            messages.Add(new ChatMessage("user", "That application is invalid:\n- " + string.Join("\n- ", errors) + "\nAnswer again with the corrected JSON only."));
        }
        return (app, errors, thresholds.Attempts);
    }

    private async Task<string> Ask(IReadOnlyList<ChatMessage> messages, CancellationToken ct)
    {
        Calls++;
        return await client.CompleteAsync(messages, ct);
    }

    internal static string Percent(double fraction) => (fraction * 100).ToString("0.#", global::System.Globalization.CultureInfo.InvariantCulture) + "%";

    private static string Tokens(TokenizedExample e) => JsonSerializer.Serialize(e.Tokens);

    private static List<ChatMessage> DraftPrompt(IEnumerable<TokenizedExample> batch)
    {
        var text = new StringBuilder("Here are examples from a dataset, each as its list of tokens:\n");
        foreach (var e in batch)
        {
            text.Append("- ").AppendLine(Tokens(e));
        }
        text.AppendLine().AppendLine(Guidelines);
        text.Append("Write a schema for this dataset as a JSON object whose keys are span titles, in order, and whose values describe each span's role with examples: {\"Span Title\": \"description\", ...}");
        return [new("system", System), new("user", text.ToString())];
    }

    private static List<ChatMessage> UnifyPrompt(IReadOnlyList<DatasetSchema> drafts, IEnumerable<TokenizedExample> sample, string? feedback)
    {
        var text = new StringBuilder("Several schemas were drafted for the same dataset:\n");
        foreach (var d in drafts)
        {
            text.AppendLine(d.ToJson().ToJsonString());
        }
        text.AppendLine("The dataset's examples, as token lists:");
        foreach (var e in sample)
        {
            text.Append("- ").AppendLine(Tokens(e));
        }
        text.AppendLine().AppendLine(Guidelines);
        if (feedback is not null)
        {
            text.AppendLine(feedback);
        }
        text.Append("Review the spans the drafts have in common and create one new schema that fits every example (do not just copy a draft). Answer with the JSON object {\"Span Title\": \"description\", ...} only.");
        return [new("system", System), new("user", text.ToString())];
    }

    private static string ApplyPrompt(DatasetSchema schema, TokenizedExample example) => $$"""
        Schema: {{schema.ToJson().ToJsonString()}}
        Example tokens: {{Tokens(example)}}

        Assign the example's tokens to the schema's spans. Rules:
        - every span of the schema appears, in the schema's order, and no new span;
        - every token is assigned exactly once, in the original order, spans contiguous;
        - punctuation without a span of its own goes with the preceding token;
        - the last token is alone in the final span;
        - keep tokens exactly as given, spaces included;
        - a span absent from this example gets an empty list.
        Answer with JSON only: {"Span Title": ["token", ...], ...}
        """;
}
