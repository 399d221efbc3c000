using System.Text.Json.Nodes;
using Pipelines.Models.Common;

namespace Pipelines.Models.Training;

/// <summary>One counterfactual example of a toy task, in word-level text.</summary>
/// <param name="Clean">The prompt.</param>
/// <param name="Corrupted">The counterfactual prompt (same length).</param>
/// <param name="Correct">The answer word on the clean prompt.</param>
/// <param name="Incorrect">The competing answer word (IOI: the subject).</param>
/// <param name="Label">Greater-than: the start year YY; any year above it is correct.</param>
public sealed record ToyExample(string Task, string Clean, string Corrupted, string Correct, string? Incorrect, int? Label, int Template)
{
    public JsonObject ToJson()
    {
        var o = new JsonObject { ["task"] = Task, ["clean"] = Clean, ["corrupted"] = Corrupted, ["correct"] = Correct, ["template"] = Template };
        if (Incorrect is not null)
        {
            o["incorrect"] = Incorrect;
        }
        if (Label is not null)
        {
            o["label"] = Label;
        }
        return o;
    }
}

/// <summary>
/// Synthetic tasks with known solutions, in a word-level vocabulary so each name or number is one token:
/// <list type="bullet">
/// <item>IOI: "When Mary and John went to the store , John gave a drink to" → Mary; the counterfactual replaces
/// the second subject mention with a third name (ABC), as in the IOI and EAP-IG datasets.</item>
/// <item>greater-than: "The war lasted from the year 17 32 to the year 17" → any two-digit year above 32; the
/// counterfactual starts at 01, as in the EAP-IG greater-than data.</item>
/// </list>
/// </summary>
public static class ToyTasks
{
    public static readonly IReadOnlyList<string> Tasks = ["ioi", "greater-than"];

    public static readonly string[] Names = ["Mary", "John", "Alice", "Bob", "Tom", "Anna", "Mike", "Sara", "Paul", "Emma", "Jack", "Lucy", "Mark", "Kate", "Dan", "Nina"];
    public static readonly string[] Places = ["store", "park", "school", "office", "garden", "beach"];
    public static readonly string[] Objects = ["drink", "book", "ring", "ball", "pen", "cake"];
    public static readonly string[] Nouns = ["war", "trip", "reign", "project", "deal", "game"];

    /// <summary>IOI templates: {0} = IO, {1} = S (first mention), {2} = S (second mention), {3} place, {4} object.</summary>
    private static readonly string[] IoiTemplates =
    [
        "When {0} and {1} went to the {3} , {2} gave a {4} to",
        "When {1} and {0} went to the {3} , {2} gave a {4} to",
        "Then , {0} and {1} had a long day at the {3} . {2} gave a {4} to",
        "Then , {1} and {0} had a long day at the {3} . {2} gave a {4} to",
        "After {0} and {1} met at the {3} , {2} handed the {4} to",
    ];

    public const string Pad = "[PAD]", Bos = "[BOS]", Unknown = "[UNK]";

    /// <summary>The fixed vocabulary of both tasks: specials, then every word in sorted order.</summary>
    public static IReadOnlyDictionary<string, int> Vocabulary()
    {
        var words = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var t in IoiTemplates)
        {
            foreach (var w in t.Split(' ').Where(w => !w.StartsWith('{')))
            {
                words.Add(w);
            }
        }
        words.UnionWith(Names);
        words.UnionWith(Places);
        words.UnionWith(Objects);
        words.UnionWith(Nouns);
        words.UnionWith("The lasted from the year to 17".Split(' '));
        words.UnionWith(Enumerable.Range(0, 100).Select(Year));
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal) { [Pad] = 0, [Bos] = 1, [Unknown] = 2 };
        foreach (var w in words)
        {
            vocab[w] = vocab.Count;
        }
        return vocab;
    }

    public static string Year(int yy) => yy.ToString("00", System.Globalization.CultureInfo.InvariantCulture);

    public static List<ToyExample> Generate(string task, int count, long seed) => task switch
    {
        "ioi" => Enumerable.Range(0, count).Select(i => Ioi(new SeededRandom(seed * 1_000_003 + i))).ToList(),
        "greater-than" => Enumerable.Range(0, count).Select(i => GreaterThan(new SeededRandom(seed * 1_000_003 + i))).ToList(),
        _ => throw new ArgumentException($"unknown toy task \"{task}\"; expected one of: {string.Join(", ", Tasks)}"),
    };

    private static ToyExample Ioi(SeededRandom r)
    {
        var names = Names.ToList();
        r.Shuffle(names);
        string io = names[0], s = names[1], c = names[2];
        var template = r.Next(IoiTemplates.Length);
        var place = Places[r.Next(Places.Length)];
        var obj = Objects[r.Next(Objects.Length)];
        var clean = string.Format(IoiTemplates[template], io, s, s, place, obj);
        var corrupted = string.Format(IoiTemplates[template], io, s, c, place, obj);
        return new ToyExample("ioi", clean, corrupted, io, s, null, template);
    }

    private static ToyExample GreaterThan(SeededRandom r)
    {
        var yy = 2 + r.Next(97); // 02..98, so a greater year exists and 01 stays a distinct counterfactual
        var noun = Nouns[r.Next(Nouns.Length)];
        var clean = $"The {noun} lasted from the year 17 {Year(yy)} to the year 17";
        var corrupted = $"The {noun} lasted from the year 17 01 to the year 17";
        return new ToyExample("greater-than", clean, corrupted, Year(yy + 1 + r.Next(99 - yy)), null, yy, 0);
    }
}
