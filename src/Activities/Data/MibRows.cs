using System.Globalization;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Data;

/// <summary>
/// MIB circuit-track rows (Hugging Face <c>mib-bench/*</c> saved as JSONL; research §6.1) as counterfactual pairs:
/// clean = <c>prompt</c>, corrupted = the counterfactual column's <c>prompt</c>, and the answers as MIB's
/// <c>HFEAPDataset</c> forms them:
/// <list type="bullet">
/// <item>IOI (<c>metadata.indirect_object</c>): " " + indirect object / " " + subject.</item>
/// <item>MCQA and ARC (<c>choices.label</c>, <c>answerKey</c>): " " + the clean row's answer label / " " + the
/// counterfactual's answer label.</item>
/// <item>Arithmetic (numeric <c>label</c>): str(label) / str(counterfactual label).</item>
/// </list>
/// The default counterfactual column is MIB's for the task: s2_io_flip (IOI), symbol (MCQA, ARC), random (arithmetic).
/// </summary>
public static class MibRows
{
    private static readonly string[] Defaults = ["s2_io_flip_counterfactual", "symbol_counterfactual", "random_counterfactual"];

    public static List<JsonObject> Convert(IReadOnlyList<JsonObject> rows, string file, string counterfactual)
    {
        var result = new List<JsonObject>(rows.Count);
        for (var i = 0; i < rows.Count; i++)
        {
            var row = rows[i];
            string Where(string field) => $"{file}, line {i + 1}: {field}";
            var column = counterfactual.Length > 0 ? counterfactual : Defaults.FirstOrDefault(d => row[d] is JsonObject)
                ?? throw new ActivityException($"{file}, line {i + 1}: no counterfactual column; expected one of {string.Join(", ", Defaults)} (or name one with \"counterfactual\")");
            if (row[column] is not JsonObject cf)
            {
                throw new ActivityException($"{Where(column)}: expected an object with \"prompt\" (a MIB counterfactual)");
            }
            var clean = Text(row, "prompt", Where("prompt"));
            var corrupted = Text(cf, "prompt", Where($"{column}.prompt"));
            string correct, incorrect;
            if (row["metadata"] is JsonObject meta && meta["indirect_object"] is not null)
            {
                correct = " " + Text(meta, "indirect_object", Where("metadata.indirect_object"));
                incorrect = " " + Text(meta, "subject", Where("metadata.subject"));
            }
            else if (row["choices"] is JsonObject)
            {
                correct = Space(clean) + Choice(row, Where(""));
                incorrect = Space(clean) + Choice(cf, Where(column + "."));
            }
            else if (row["label"] is JsonValue label)
            {
                correct = Number(label);
                incorrect = cf["label"] is JsonValue other ? Number(other) : throw new ActivityException($"{Where(column + ".label")}: expected the counterfactual's answer");
            }
            else
            {
                throw new ActivityException($"{file}, line {i + 1}: unrecognized MIB row; expected metadata.indirect_object (IOI), choices and answerKey (MCQA, ARC) or label (arithmetic)");
            }
            result.Add(new JsonObject
            {
                ["clean"] = clean,
                ["corrupted"] = corrupted,
                ["correct"] = correct,
                ["incorrect"] = incorrect,
                ["counterfactual"] = column,
                ["source_line"] = i + 1,
            });
        }
        return result;
    }

    private static string Space(string prompt) => prompt.Length > 0 && char.IsWhiteSpace(prompt[^1]) ? "" : " ";

    private static string Text(JsonObject o, string field, string where) =>
        o[field] is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw new ActivityException($"{where}: expected a string");

    private static string Number(JsonValue v) => v.TryGetValue<string>(out var s) ? s : v.GetValue<double>().ToString(CultureInfo.InvariantCulture);

    private static string Choice(JsonObject row, string where)
    {
        if (row["choices"] is not JsonObject choices || choices["label"] is not JsonArray labels || row["answerKey"] is not JsonValue key)
        {
            throw new ActivityException($"{where}choices.label and answerKey: expected a list of labels and the answer's index");
        }
        var index = key.TryGetValue<int>(out var k) ? k : labels.Select(l => l?.ToString()).ToList().IndexOf(key.ToString());
        return index >= 0 && index < labels.Count && labels[index] is JsonValue l ? l.ToString()
            : throw new ActivityException($"{where}answerKey: {key} is not an index or label of choices.label");
    }
}
