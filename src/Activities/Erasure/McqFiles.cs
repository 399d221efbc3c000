using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Erasure;

/// <summary>
/// Reads multiple-choice sets and text corpora for the erasure battery. MCQs: a JSON array, an object holding one
/// array (e.g. {"data": [...]}) or JSONL, each row with a question ("question" or "prompt"), its options ("choices",
/// "options", or "A"-"D" fields) and the answer as an index (lm-eval / WMDP: "answer": 2), a letter ("B"), or the
/// option's text (the Harry Potter MCQ layout). Optional "split" (train / held-out) and "subject". Corpora: JSONL
/// with a "text" field, or plain text with one document per line.
/// </summary>
public static class McqFiles
{
    public static List<ConceptMcq> Read(string path, string name, string domain = "target")
    {
        var rows = ReadRows(path, name);
        var questions = new List<ConceptMcq>();
        for (var i = 0; i < rows.Count; i++)
        {
            var where = $"{name}: row {i + 1}";
            var row = rows[i];
            var question = Text(row["question"] ?? row["prompt"]) ?? throw new ActivityException($"{where}: expected a \"question\" string");
            List<string> choices;
            if ((row["choices"] ?? row["options"]) is JsonArray array)
            {
                choices = array.Select(c => Text(c) ?? throw new ActivityException($"{where}: $.choices: expected strings")).ToList();
            }
            else if (row["A"] is not null)
            {
                choices = ConceptMcq.Letters.Select(l => Text(row[l])).TakeWhile(c => c is not null).Select(c => c!).ToList();
            }
            else
            {
                throw new ActivityException($"{where}: expected \"choices\" (an array of option strings) or fields \"A\"…\"D\"");
            }
            if (choices.Count is < 2 or > 4)
            {
                throw new ActivityException($"{where}: $.choices: expected 2 to 4 options, found {choices.Count}");
            }
            var answer = row["answer"] ?? row["label"] ?? throw new ActivityException($"{where}: expected an \"answer\" (an index, a letter or the option's text)");
            int index;
            if (answer is JsonValue v && v.TryGetValue<int>(out var n))
            {
                index = n;
            }
            else if (Text(answer) is { } s)
            {
                var letter = Array.IndexOf(ConceptMcq.Letters, s.Trim().TrimEnd('.', ')').ToUpperInvariant());
                index = s.Trim().Length <= 2 && letter >= 0 ? letter : choices.FindIndex(c => string.Equals(c.Trim(), s.Trim(), StringComparison.OrdinalIgnoreCase));
            }
            else
            {
                throw new ActivityException($"{where}: $.answer: expected an index, a letter or the option's text");
            }
            if (index < 0 || index >= choices.Count)
            {
                throw new ActivityException($"{where}: $.answer: {answer.ToJsonString()} is not one of the {choices.Count} options");
            }
            var split = Text(row["split"]) is "train" or "held-out" ? Text(row["split"])! : "";
            questions.Add(new ConceptMcq(Text(row["subject"]) ?? domain, "", "", question, choices, index, split));
        }
        if (questions.Count == 0)
        {
            throw new ActivityException($"{name}: no questions");
        }
        return questions;
    }

    private static string? Text(JsonNode? node) => node is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;

    private static List<JsonObject> ReadRows(string path, string name)
    {
        var head = File.ReadAllText(path).TrimStart();
        if (head.StartsWith('['))
        {
            return Parse(head, name) is JsonArray a ? a.Select((r, i) => r as JsonObject ?? throw new ActivityException($"{name}: $[{i}]: expected an object")).ToList() : [];
        }
        if (head.StartsWith('{') && Parse(head, name, quiet: true) is JsonObject o && o.Count == 1 && o.First().Value is JsonArray inner)
        {
            return inner.Select((r, i) => r as JsonObject ?? throw new ActivityException($"{name}: $.{o.First().Key}[{i}]: expected an object")).ToList();
        }
        return Jsonl.Read(path, name);
    }

    private static JsonNode? Parse(string text, string name, bool quiet = false)
    {
        try
        {
            return JsonNode.Parse(text);
        }
        catch (JsonException e) when (quiet)
        {
            _ = e;
            return null;
        }
        catch (JsonException e)
        {
            throw new ActivityException($"{name}: not valid JSON ({e.Message.Split('.')[0]})");
        }
    }

    /// <summary>Texts of a corpus: JSONL rows' "text" field, or one document per line.</summary>
    public static List<string> Texts(string path, string name)
    {
        var first = File.ReadLines(path).FirstOrDefault(l => l.Trim().Length > 0)?.TrimStart() ?? "";
        if (first.StartsWith('{'))
        {
            return Jsonl.Read(path, name).Select((r, i) => Text(r["text"]) ?? throw new ActivityException($"{name}: row {i + 1}: expected a \"text\" string")).ToList();
        }
        return File.ReadLines(path).Select(l => l.Trim()).Where(l => l.Length > 0).ToList();
    }
}
