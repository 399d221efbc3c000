using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>
/// Reads MIB's multiple-choice counterfactual rows (4_answer_MCQA, ARC; research/causal.md §2.1–2.3) and labels them
/// with the task's causal model: answer_pointer = the index of the correct choice, answer = " " + its symbol.
/// Interchanging answer_pointer from a source gives " " + the base's symbol at the source's pointer; interchanging answer
/// gives the source's answer. Each counterfactual column becomes a set; positions: last, correct_symbol (the correct
/// choice's letter in the prompt) and correct_symbol_period, as character offsets so any tokenizer resolves them.
/// </summary>
[Activity("causal.import-mib", Version = 1, Category = "Causal", Summary = "Import MIB's MCQA/ARC counterfactual rows (JSONL of the Hugging Face layout) and label them with the causal model (answer_pointer, answer)")]
[Output("dataset", ArtifactKinds.Dataset, Help = "Labelled counterfactual rows for causal.featurizer and causal.iia", MediaType = "application/x-ndjson", FileName = "counterfactuals.jsonl")]
public sealed class MibImportActivity : Activity<MibImportActivity.Input>
{
    public sealed record Input
    {
        [Input("MIB rows as JSONL: prompt, choices {label, text}, answerKey, and {name}_counterfactual columns of the same shape", IsPath = true, PathKind = PathKind.File)]
        public required string Path { get; init; }

        [Input("The split these rows are (train or test)")]
        public string Split { get; init; } = "test";

        [Input("Variables to label")]
        public IReadOnlyList<string> Variables { get; init; } = ["answer_pointer", "answer"];

        [Input("Use at most this many base rows (0: all)", Minimum = 0)]
        public int Limit { get; init; }
    }

    private sealed record Mcq(string Prompt, IReadOnlyList<string> Labels, int Pointer)
    {
        public string Answer => " " + Labels[Pointer];
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var bad = input.Variables.FirstOrDefault(v => v is not ("answer_pointer" or "answer"));
        if (bad is not null)
        {
            throw new ActivityException($"inputs.variables: \"{bad}\" is not a variable of MIB's MCQA causal model (answer_pointer, answer)");
        }
        var rows = Jsonl.Read(input.Path, "path", context, input.Limit);
        var output = new List<JsonObject>();
        for (var i = 0; i < rows.Count; i++)
        {
            var where = $"path, row {i + 1}";
            var b = Read(rows[i], where);
            var columns = rows[i].Where(p => p.Key.EndsWith("_counterfactual", StringComparison.Ordinal)).ToList();
            if (columns.Count == 0)
            {
                throw new ActivityException($"{where}: no \"{{name}}_counterfactual\" column");
            }
            foreach (var (column, node) in columns)
            {
                var set = column[..^"_counterfactual".Length];
                var s = Read(node as JsonObject ?? throw new ActivityException($"{where}: {column} must be an object with prompt, choices and answerKey"), $"{where}: {column}");
                foreach (var variable in input.Variables)
                {
                    var expected = variable == "answer" ? s.Answer : " " + b.Labels[Math.Min(s.Pointer, b.Labels.Count - 1)];
                    output.Add(new JsonObject
                    {
                        ["id"] = $"{i + 1}-{set}-{variable}", ["split"] = input.Split, ["set"] = set, ["variable"] = variable,
                        ["base"] = b.Prompt, ["source"] = s.Prompt, ["expected"] = expected, ["base_answer"] = b.Answer, ["source_answer"] = s.Answer,
                        ["positions"] = new JsonObject
                        {
                            ["correct_symbol"] = Pair(Symbol(b, where), Symbol(s, $"{where}: {column}")),
                            ["correct_symbol_period"] = Pair(Symbol(b, where) + 1, Symbol(s, $"{where}: {column}") + 1),
                        },
                    });
                }
            }
        }
        Jsonl.Write(context.OutputFile("dataset"), output);
        context.Log($"{rows.Count} base rows → {output.Count} labelled counterfactual rows ({string.Join(", ", input.Variables)})");
        return Task.CompletedTask;
    }

    private static JsonObject Pair(int b, int s) => new() { ["base"] = new JsonArray(new JsonObject { ["char"] = b }), ["source"] = new JsonArray(new JsonObject { ["char"] = s }) };

    /// <summary>The character offset just after the correct choice's symbol in "\nC. brown".</summary>
    private static int Symbol(Mcq q, string where)
    {
        var marker = $"\n{q.Labels[q.Pointer]}.";
        var at = q.Prompt.IndexOf(marker, StringComparison.Ordinal);
        return at >= 0 ? at + 1 + q.Labels[q.Pointer].Length
            : throw new ActivityException($"{where}: the prompt has no line \"{q.Labels[q.Pointer]}. …\" for the correct choice");
    }

    private static Mcq Read(JsonObject row, string where)
    {
        var prompt = row["prompt"] is JsonValue p && p.TryGetValue<string>(out var text) && text.Length > 0 ? text
            : throw new ActivityException($"{where}: expected a non-empty string \"prompt\"");
        var labels = row["choices"]?["label"] is JsonArray l && l.Count > 0 ? l.Select(x => x?.ToString() ?? "").ToList()
            : throw new ActivityException($"{where}: expected \"choices\": {{\"label\": [...], \"text\": [...]}}");
        var key = row["answerKey"];
        int pointer;
        if (key is JsonValue v && v.TryGetValue<int>(out var index))
        {
            pointer = index;
        }
        else if (key is JsonValue s && s.TryGetValue<string>(out var letter) && labels.IndexOf(letter) is var found and >= 0)
        {
            pointer = found;
        }
        else
        {
            throw new ActivityException($"{where}: \"answerKey\" must be a choice index or one of the labels ({string.Join(", ", labels)})");
        }
        return pointer >= 0 && pointer < labels.Count ? new Mcq(prompt, labels, pointer)
            : throw new ActivityException($"{where}: answerKey {pointer} is outside the {labels.Count} choices");
    }
}
