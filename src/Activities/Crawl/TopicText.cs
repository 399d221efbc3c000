using System.Text;
using System.Text.RegularExpressions;

namespace Pipelines.Activities.Crawl;

/// <summary>
/// Reading topics out of a generation and normalising them (research §A.5). Steps 1, 3, 5 and 6 follow the paper's
/// code; step 2 (machine translation EN↔ZH) and step 4 (spaCy's part-of-speech filter) need models we cannot ship,
/// so a Chinese item is kept in Chinese (its language recorded) and the stop-list does the POS filter's main job
/// (dropping determiners and pronouns, listed below).
/// </summary>
public static partial class TopicText
{
    [GeneratedRegex(@"\d+\.\s*(.*?)(?:\n|$)")]
    private static partial Regex NumberedItem();

    [GeneratedRegex(@"\s+\d+\.\s+")]
    private static partial Regex InlineNumber();

    [GeneratedRegex(@"[\u4e00-\u9fff]")]
    private static partial Regex Cjk();

    private static readonly HashSet<string> StopWords = new(StringComparer.Ordinal)
    {
        // The paper's stop-list, with plurals.
        "content", "contents", "element", "elements", "statement", "statements", "topic", "topics", "reference", "references",
        "comment", "comments", "issue", "issues", "discussion", "discussions", "interpretation", "interpretations", "conduct",
        "behavior", "behaviors", "expression", "expressions", "action", "actions", "act", "acts", "situation", "situations",
        "event", "events", "mention", "mentions", "description", "descriptions", "sensitive", "any", "anything", "contain",
        "containing", "related", "involve", "involving", "involves",
        // What the POS filter (NN, CD, JJ, VB, CC, AD, IN kept) removes most often: determiners, pronouns, common adverbs.
        "the", "a", "an", "this", "that", "these", "those", "my", "your", "his", "her", "its", "our", "their", "i", "you",
        "he", "she", "it", "we", "they", "me", "him", "us", "them", "very", "also", "just", "too", "such", "some", "etc",
    };

    private static readonly HashSet<string> Connectors = new(StringComparer.Ordinal) { "and", "or", "of", "to", "in", "on", "at" };

    /// <summary>
    /// Numbered-list items of a generation, in order, exact duplicates removed, at most <paramref name="max"/>. The
    /// paper's per-line pattern, plus one addition: a list written on one line ("1. a 2. b") is split at its numbers,
    /// as models (and word-level tokenizers, which drop newlines) sometimes write it.
    /// </summary>
    public static IReadOnlyList<string> Extract(string generation, int max)
    {
        var items = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var item in NumberedItem().Matches(generation).SelectMany(m => InlineNumber().Split(m.Groups[1].Value)).Select(i => i.Trim()))
        {
            if (item.Length > 0 && seen.Add(item))
            {
                items.Add(item);
                if (items.Count == max)
                {
                    break;
                }
            }
        }
        return items;
    }

    public static bool IsChinese(string text) => Cjk().IsMatch(text);

    public static string Language(string text) => IsChinese(text) ? CrawlPrompts.Chinese : CrawlPrompts.English;

    /// <summary>
    /// The normalised form used for deduplication: lower case, the characters <c> ./:",'()[]</c> stripped from both
    /// ends, dots deleted, one-letter words, stop words and repeated words dropped, leading and trailing connectors
    /// (and, or, of, to, in, on, at) stripped. Chinese text is lower-cased and trimmed only.
    /// </summary>
    public static string Normalize(string raw)
    {
        var text = raw.Normalize(NormalizationForm.FormKC).ToLowerInvariant().Trim().Trim(' ', '.', '/', ':', '"', ',', '\'', '(', ')', '[', ']', '*');
        if (IsChinese(text))
        {
            return text.Trim('。', '，', '、', '：', '；', ' ');
        }
        text = text.Replace(".", "", StringComparison.Ordinal);
        var words = new List<string>();
        foreach (var w in text.Split((char[])[' ', '\t', '*', '"'], StringSplitOptions.RemoveEmptyEntries))
        {
            var word = w.Trim(',', ';', ':', '(', ')', '[', ']', '\'', '"');
            if (word.Length <= 1 || StopWords.Contains(word) || words.Contains(word))
            {
                continue;
            }
            words.Add(word);
        }
        while (words.Count > 0 && Connectors.Contains(words[0]))
        {
            words.RemoveAt(0);
        }
        while (words.Count > 0 && Connectors.Contains(words[^1]))
        {
            words.RemoveAt(words.Count - 1);
        }
        return string.Join(' ', words);
    }

    /// <summary>Step 6: an item with commas becomes its first part plus one item per further part (same parent).</summary>
    public static IReadOnlyList<string> SplitAtCommas(string item) =>
        item.Split([',', '，', '、'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Where(p => p.Length > 0).ToList();
}
