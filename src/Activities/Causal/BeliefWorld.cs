using System.Text.Json.Nodes;
using Pipelines.Models.Common;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Training;

namespace Pipelines.Activities.Causal;

/// <summary>
/// A CausalToM-style belief-tracking toy (research/causal.md §4.5) in a word-level vocabulary, so every word is one
/// token and positions are fixed: "ann fills cup with tea . bob fills jar with gin . [bob sees ann .] question ann cup" →
/// tea. A character believes a container holds its state if they filled it, or saw who did; otherwise
/// "unknown". Counterfactual rows carry the expected output under each interchange (pointer, payload, binding swap).
/// </summary>
public static class BeliefWorld
{
    public static readonly string[] Characters = ["ann", "bob", "cal", "dee", "eve", "fay", "gus", "hal", "ivy", "jon", "kim", "lou", "max", "ned", "oz", "pam"];
    public static readonly string[] Containers = ["cup", "jar", "mug", "pot", "tin", "can", "box", "vat"];
    public static readonly string[] States = ["tea", "gin", "rum", "ale", "oil", "jam", "soda", "milk"];
    public const string Unknown = "unknown";

    /// <summary>Token positions of the template without a visibility sentence (BOS is 0).</summary>
    public const int State1 = 3, State2 = 7, QueryCharacter = 10, QueryContainer = 11, Last = 11;

    public static WordLevelTokenizer Tokenizer() => WordLevelTokenizer.WithSpecials(
        Characters.Concat(Containers).Concat(States).Concat([".", "sees", "question", Unknown]),
        ToyWorldTokens.Pad, ToyWorldTokens.Bos, ToyWorldTokens.Eos, ToyWorldTokens.Unknown);

    /// <summary>A story: two (character, container, state) triples in order, optionally "c2 sees c1".</summary>
    public sealed record Story(string[] C, string[] O, string[] S, bool Sees)
    {
        public string Text => $"{C[0]} {O[0]} {S[0]} . {C[1]} {O[1]} {S[1]} .{(Sees ? $" {C[1]} sees {C[0]} ." : "")}";

        public string Prompt(string c, string o) => $"{Text} question {c} {o}";

        public string Belief(string c, string o)
        {
            var i = Array.IndexOf(O, o);
            var filler = Array.IndexOf(C, c);
            return filler == i || (Sees && filler == 1 && i == 0) ? S[i] : Unknown;
        }

        public Story Reversed => new([C[1], C[0]], [O[1], O[0]], [S[1], S[0]], false);
    }

    public static Story Draw(SeededRandom rng, bool allowSees)
    {
        string[] Two(string[] pool)
        {
            var a = rng.Next(pool.Length);
            var b = rng.Next(pool.Length - 1);
            return [pool[a], pool[b >= a ? b + 1 : b]];
        }
        return new Story(Two(Characters), Two(Containers), Two(States), allowSees && rng.Next(10) < 3);
    }

    /// <summary>
    /// Training examples. Half are belief questions (half of those ask a character about their own container, half about
    /// the other's); the other half are the two single hops they compose, "question cup holds" → tea and "question ann
    /// fills" → cup, which the model learns first and which make the belief questions learnable in minutes.
    /// </summary>
    public static IReadOnlyList<ChatExample> Batch(int step, int size, long seed)
    {
        var rng = new SeededRandom(seed * 7_919 + step);
        return Enumerable.Range(0, size).Select(_ =>
        {
            var story = Draw(rng, allowSees: true);
            // Three questions per story, each answered: the first right after the story (as asked at test time), the others
            // after it, all in the completion so that every answer is a training signal.
            var asked = Enumerable.Range(0, 3).Select(_ =>
            {
                var c = rng.Next(2);
                var o = rng.Next(4) != 0 ? c : 1 - c; // three in four ask about the character's own container: retrieval is learned first
                return (C: story.C[c], O: story.O[o]);
            }).ToList();
            var rest = string.Concat(asked.Skip(1).Select(q => $" . question {q.C} {q.O} {story.Belief(q.C, q.O)}"));
            return new ChatExample(story.Prompt(asked[0].C, asked[0].O), story.Belief(asked[0].C, asked[0].O) + rest);
        }).ToList();
    }

    /// <summary>Belief questions only (held-out accuracy).</summary>
    public static IReadOnlyList<ChatExample> Questions(int step, int size, long seed)
    {
        var rng = new SeededRandom(seed * 7_919 + step);
        return Enumerable.Range(0, size).Select(_ =>
        {
            var story = Draw(rng, allowSees: true);
            var c = rng.Next(2);
            var o = rng.Next(2) == 0 ? c : 1 - c;
            return new ChatExample(story.Prompt(story.C[c], story.O[o]), story.Belief(story.C[c], story.O[o]));
        }).ToList();
    }

    /// <summary>Labelled counterfactual rows for the pointer, payload and binding variables, split 75/25 train/test.</summary>
    public static List<JsonObject> Counterfactuals(int count, long seed)
    {
        var rng = new SeededRandom(seed * 31 + 5);
        var rows = new List<JsonObject>();
        for (var i = 0; i < count; i++)
        {
            var split = i % 4 == 3 ? "test" : "train";
            var b = Draw(rng, false);
            var s = Draw(rng, false);
            var r = rng.Next(2);
            // Answer pointer at the last token: the source asks about its other slot; the base should answer its own slot 1 − r.
            rows.Add(Row($"pointer-{i}", split, "pointer", "pointer", b.Prompt(b.C[r], b.O[r]), s.Prompt(s.C[1 - r], s.O[1 - r]), b.S[1 - r], b.S[r], s.S[1 - r], Last, Last));
            // Payload at the last token: the source (another story) asks about one of its slots; once the last token holds
            // the fetched state itself, patching it brings out the source's state, a word the base story does not contain.
            var q = rng.Next(2);
            rows.Add(Row($"payload-{i}", split, "payload", "payload", b.Prompt(b.C[r], b.O[r]), s.Prompt(s.C[q], s.O[q]), s.S[q], b.S[r], s.S[q], Last, Last));
            // Binding swap at the state tokens: the source tells the story in the other order; its state tokens go to the
            // base's other slots. Ordering IDs predict the other state (lookback); token matching predicts the same one.
            var swapped = b.Reversed;
            var row = Row($"binding-{i}", split, "binding", "binding", b.Prompt(b.C[r], b.O[r]), swapped.Prompt(b.C[r], b.O[r]), b.S[1 - r], b.S[r], b.S[r], Last, Last);
            row["positions"]!["states"] = new JsonObject { ["base"] = new JsonArray(State1, State2), ["source"] = new JsonArray(State2, State1) };
            rows.Add(row);
        }
        return rows;
    }

    private static JsonObject Row(string id, string split, string set, string variable, string @base, string source, string expected, string baseAnswer, string sourceAnswer, int basePosition, int sourcePosition) => new()
    {
        ["id"] = id, ["split"] = split, ["set"] = set, ["variable"] = variable,
        ["base"] = @base, ["source"] = source, ["expected"] = expected, ["base_answer"] = baseAnswer, ["source_answer"] = sourceAnswer,
        ["positions"] = new JsonObject
        {
            ["last"] = new JsonObject { ["base"] = new JsonArray(basePosition), ["source"] = new JsonArray(sourcePosition) },
            ["query"] = new JsonObject { ["base"] = new JsonArray(QueryCharacter), ["source"] = new JsonArray(QueryCharacter) },
        },
    };

    /// <summary>Patching pairs: the same story, the question about the other (character, container) pair.</summary>
    public static List<JsonObject> Pairs(int count, long seed)
    {
        var rng = new SeededRandom(seed * 17 + 3);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var b = Draw(rng, false);
            var r = rng.Next(2);
            return new JsonObject
            {
                ["clean"] = b.Prompt(b.C[r], b.O[r]), ["corrupted"] = b.Prompt(b.C[1 - r], b.O[1 - r]), ["correct"] = b.S[r], ["incorrect"] = b.S[1 - r],
            };
        }).ToList();
    }
}

/// <summary>The special tokens every toy world's word-level tokenizer starts with.</summary>
public static class ToyWorldTokens
{
    public const string Pad = "[PAD]", Bos = "[BOS]", Eos = "[EOS]", Unknown = "[UNK]";
    public static readonly string[] Specials = [Pad, Bos, Eos, Unknown];
}
