using Pipelines.Engine.Activities;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Activities.Model;

/// <summary>
/// Refuses prompts the model cannot read: when more than <see cref="MaxUnknownShare"/> of their tokens are the
/// tokenizer's unknown token (a toy word-level model given GPT-2-style text, say), every score computed on them
/// would be noise or exactly zero, so the step fails and names the share and some of the words.
/// </summary>
public static class VocabularyCheck
{
    /// <summary>The largest share of unknown prompt tokens accepted (5 %).</summary>
    public const double MaxUnknownShare = 0.05;

    /// <summary>Checks tokenized prompts; <paramref name="texts"/> are the prompts the ids came from, for examples.</summary>
    public static void Check(ITextTokenizer tokenizer, IReadOnlyList<IReadOnlyList<int>> tokenized, IReadOnlyList<string> texts, string what)
    {
        if (tokenizer.UnknownId is not { } unk)
        {
            return;
        }
        long total = 0, unknown = 0;
        foreach (var ids in tokenized)
        {
            total += ids.Count;
            unknown += ids.Count(id => id == unk);
        }
        if (total == 0 || (double)unknown / total <= MaxUnknownShare)
        {
            return;
        }
        var examples = UnknownWords(tokenizer, texts);
        throw new ActivityException($"{what}: {unknown:N0} of {total:N0} prompt tokens ({(double)unknown / total:P1}) are unknown to this model's tokenizer " +
            $"(at most {MaxUnknownShare:P0} allowed){(examples.Count > 0 ? ", e.g. " + string.Join(", ", examples) : "")}; the data was made for another vocabulary");
    }

    /// <summary>
    /// Up to <paramref name="max"/> whitespace-separated words of the texts that the tokenizer reads as its unknown
    /// token, quoted and shortened for a message (none when the tokenizer has no unknown token).
    /// </summary>
    public static List<string> UnknownWords(ITextTokenizer tokenizer, IEnumerable<string> texts, int max = 5) =>
        tokenizer.UnknownId is not { } unk ? [] : texts.SelectMany(t => t.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
            .Where(w => tokenizer.Encode(w) is [var id] && id == unk)
            .Distinct(StringComparer.Ordinal).Take(max).Select(w => $"\"{(w.Length > 20 ? w[..20] + "…" : w)}\"").ToList();

    /// <summary>An answer word must be one token of the vocabulary, not the unknown token.</summary>
    public static int AnswerToken(ITextTokenizer tokenizer, string word, string where)
    {
        var ids = tokenizer.Encode(word);
        if (ids.Count != 1)
        {
            throw new ActivityException($"{where}: the answer \"{Shown(word)}\" is not a single token for this model's tokenizer");
        }
        if (tokenizer.UnknownId is { } unk && ids[0] == unk && tokenizer.TokenToId(word) != unk)
        {
            throw new ActivityException($"{where}: the answer \"{Shown(word)}\" is not in this model's vocabulary");
        }
        return ids[0];
    }

    private static string Shown(string word) => word.Length > 40 ? word[..40] + "…" : word;
}
