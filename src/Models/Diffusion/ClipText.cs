using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Diffusion;

/// <summary>CLIPAttention: q/k/v/out projections with bias, causal, scale 1/√head.</summary>
public sealed class ClipAttention : nn.Module
{
#pragma warning disable IDE1006
    public readonly DLinear q_proj, k_proj, v_proj, out_proj;
#pragma warning restore IDE1006
    private readonly int _heads;

    public ClipAttention(long dim, int heads) : base("self_attn")
    {
        _heads = heads;
        q_proj = new DLinear(dim, dim);
        k_proj = new DLinear(dim, dim);
        v_proj = new DLinear(dim, dim);
        out_proj = new DLinear(dim, dim);
        register_module("k_proj", k_proj);
        register_module("v_proj", v_proj);
        register_module("q_proj", q_proj);
        register_module("out_proj", out_proj);
    }

    public Tensor Forward(Tensor x)
    {
        long b = x.shape[0], n = x.shape[1], c = x.shape[2], d = c / _heads;
        var q = q_proj.Forward(x).view(b, n, _heads, d).transpose(1, 2);
        var k = k_proj.Forward(x).view(b, n, _heads, d).transpose(1, 2);
        var v = v_proj.Forward(x).view(b, n, _heads, d).transpose(1, 2);
        var o = CrossAttention.Sdpa(q, k, v, true);
        return out_proj.Forward(o.transpose(1, 2).reshape(b, n, c));
    }
}

/// <summary>CLIPMLP: fc1 → quick_gelu (or gelu) → fc2.</summary>
public sealed class ClipMlp : nn.Module
{
#pragma warning disable IDE1006
    public readonly DLinear fc1, fc2;
#pragma warning restore IDE1006
    private readonly bool _quick;

    public ClipMlp(long dim, long inner, bool quickGelu) : base("mlp")
    {
        _quick = quickGelu;
        fc1 = new DLinear(dim, inner);
        fc2 = new DLinear(inner, dim);
        register_module("fc1", fc1);
        register_module("fc2", fc2);
    }

    public Tensor Forward(Tensor x)
    {
        var h = fc1.Forward(x);
        h = _quick ? h * (h * Scalars.Of(1.702)).sigmoid() : F.gelu(h);
        return fc2.Forward(h);
    }
}

/// <summary>CLIPEncoderLayer: pre-LN attention and MLP with residuals.</summary>
public sealed class ClipLayer : nn.Module
{
#pragma warning disable IDE1006
    public readonly ClipAttention self_attn;
    public readonly LNorm layer_norm1, layer_norm2;
    public readonly ClipMlp mlp;
#pragma warning restore IDE1006

    public ClipLayer(ClipTextConfig c) : base("layer")
    {
        self_attn = new ClipAttention(c.HiddenSize, c.Heads);
        layer_norm1 = new LNorm(c.HiddenSize, c.LayerNormEps);
        mlp = new ClipMlp(c.HiddenSize, c.IntermediateSize, c.HiddenAct == "quick_gelu");
        layer_norm2 = new LNorm(c.HiddenSize, c.LayerNormEps);
        register_module("self_attn", self_attn);
        register_module("layer_norm1", layer_norm1);
        register_module("mlp", mlp);
        register_module("layer_norm2", layer_norm2);
    }

    public Tensor Forward(Tensor h)
    {
        h = h.Plus(self_attn.Forward(layer_norm1.Forward(h)));
        return h.Plus(mlp.Forward(layer_norm2.Forward(h)));
    }
}

/// <summary>The embeddings, encoder layers and final LayerNorm under <c>text_model.</c>.</summary>
public sealed class ClipTextTransformer : nn.Module
{
#pragma warning disable IDE1006
    public readonly ClipEmbeddings embeddings;
    public readonly ClipEncoder encoder;
    public readonly LNorm final_layer_norm;
#pragma warning restore IDE1006

    public ClipTextTransformer(ClipTextConfig c) : base("text_model")
    {
        embeddings = new ClipEmbeddings(c);
        encoder = new ClipEncoder(c);
        final_layer_norm = new LNorm(c.HiddenSize, c.LayerNormEps);
        register_module("embeddings", embeddings);
        register_module("encoder", encoder);
        register_module("final_layer_norm", final_layer_norm);
    }
}

public sealed class ClipEmbeddings : nn.Module
{
#pragma warning disable IDE1006
    public readonly Embed token_embedding, position_embedding;
#pragma warning restore IDE1006

    public ClipEmbeddings(ClipTextConfig c) : base("embeddings")
    {
        token_embedding = new Embed(c.VocabSize, c.HiddenSize);
        position_embedding = new Embed(c.MaxPositions, c.HiddenSize);
        register_module("token_embedding", token_embedding);
        register_module("position_embedding", position_embedding);
    }
}

public sealed class ClipEncoder : nn.Module
{
#pragma warning disable IDE1006
    public readonly ModuleList<ClipLayer> layers;
#pragma warning restore IDE1006

    public ClipEncoder(ClipTextConfig c) : base("encoder")
    {
        layers = new ModuleList<ClipLayer>(Enumerable.Range(0, c.Layers).Select(_ => new ClipLayer(c)).ToArray());
        register_module("layers", layers);
    }
}

/// <summary>
/// transformers' CLIPTextModel: token + position embeddings, causal pre-LN layers, final LayerNorm. SD conditions on
/// the final-layer-normed hidden state of every position (<see cref="Encode"/>); <see cref="EncodeEmbeddings"/> takes
/// token embeddings instead of ids so optimised prompts and textual inversion get gradients.
/// </summary>
public sealed class ClipTextModel : nn.Module
{
#pragma warning disable IDE1006
    public readonly ClipTextTransformer text_model;
#pragma warning restore IDE1006

    public ClipTextModel(ClipTextConfig config) : base("text_encoder")
    {
        Config = config;
        text_model = new ClipTextTransformer(config);
        register_module("text_model", text_model);
    }

    public ClipTextConfig Config { get; }

    public Parameter TokenEmbedding => text_model.embeddings.token_embedding.weight;

    /// <summary>ids [B, S] (S ≤ max positions) → last_hidden_state [B, S, D]; clipSkip k takes the k-th layer from the end.</summary>
    public Tensor Encode(Tensor ids, int clipSkip = 0) => EncodeEmbeddings(TokenEmbedding.index_select(0, ids.flatten()).view(ids.shape[0], ids.shape[1], -1), clipSkip);

    public Tensor EncodeEmbeddings(Tensor tokenEmbeds, int clipSkip = 0)
    {
        var n = tokenEmbeds.shape[1];
        if (n > Config.MaxPositions)
        {
            throw new ArgumentException($"{n} tokens exceed the text encoder's {Config.MaxPositions} positions");
        }
        var h = tokenEmbeds.Plus(text_model.embeddings.position_embedding.weight.narrow(0, 0, n).unsqueeze(0));
        var layers = text_model.encoder.layers;
        var last = layers.Count - Math.Clamp(clipSkip, 0, layers.Count);
        for (var l = 0; l < last; l++)
        {
            h = layers[l].Forward(h);
        }
        return text_model.final_layer_norm.Forward(h);
    }
}

/// <summary>
/// CLIP's byte-level BPE (transformers' CLIPTokenizer for ASCII-normalised text): lower-case, collapse whitespace,
/// split with CLIP's pattern, GPT-2 byte map, <c>&lt;/w&gt;</c> on each piece's last symbol, lowest-rank merges;
/// <c>[bos] + pieces[:L−2] + [eos]</c> padded to L (77) with the pad token.
/// </summary>
public sealed partial class ClipTokenizer
{
    public const string Bos = "<|startoftext|>";
    public const string Eos = "<|endoftext|>";
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<(string, string), int> _ranks;
    private readonly List<(string, string)> _merges;
    private readonly Dictionary<string, string[]> _cache = new(StringComparer.Ordinal);
    private static readonly string ByteMap = BuildByteMap();

    public ClipTokenizer(Dictionary<string, int> vocab, IReadOnlyList<(string, string)> merges, int maxLength, string padToken = Eos)
    {
        _vocab = vocab;
        _merges = merges.ToList();
        _ranks = new Dictionary<(string, string), int>();
        for (var i = 0; i < merges.Count; i++)
        {
            _ranks.TryAdd(merges[i], i);
        }
        MaxLength = maxLength;
        BosId = vocab.TryGetValue(Bos, out var b) ? b : throw new CheckpointException($"the CLIP vocabulary has no {Bos}");
        EosId = vocab.TryGetValue(Eos, out var e) ? e : throw new CheckpointException($"the CLIP vocabulary has no {Eos}");
        PadId = vocab.TryGetValue(padToken, out var p) ? p : EosId;
        PadToken = padToken;
    }

    public int MaxLength { get; }
    public int BosId { get; }
    public int EosId { get; }
    public int PadId { get; }
    public string PadToken { get; }
    public int VocabSize => _vocab.Count;
    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    [GeneratedRegex(@"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+", RegexOptions.IgnoreCase)]
    private static partial Regex Pattern();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();

    /// <summary>The BPE pieces of a text, without BOS/EOS or padding.</summary>
    public IReadOnlyList<int> Pieces(string text)
    {
        var clean = Whitespace().Replace(text, " ").Trim().ToLowerInvariant();
        var ids = new List<int>();
        foreach (Match m in Pattern().Matches(clean))
        {
            var mapped = new StringBuilder();
            foreach (var b in Encoding.UTF8.GetBytes(m.Value))
            {
                mapped.Append(ByteMap[b]);
            }
            foreach (var piece in Bpe(mapped.ToString()))
            {
                ids.Add(_vocab.TryGetValue(piece, out var id) ? id : EosId);
            }
        }
        return ids;
    }

    /// <summary>[bos] + pieces (truncated) + [eos], padded to <see cref="MaxLength"/>; also the index of the last word token.</summary>
    public long[] Encode(string text)
    {
        var pieces = Pieces(text).Take(MaxLength - 2);
        var ids = new List<long> { BosId };
        ids.AddRange(pieces.Select(p => (long)p));
        ids.Add(EosId);
        while (ids.Count < MaxLength)
        {
            ids.Add(PadId);
        }
        return ids.ToArray();
    }

    /// <summary>The number of real tokens (BOS, pieces, EOS) of a text, as the attention mask's sum.</summary>
    public int Length(string text) => Math.Min(Pieces(text).Count, MaxLength - 2) + 2;

    public string Decode(IEnumerable<long> ids)
    {
        var inverse = _vocab.ToDictionary(kv => kv.Value, kv => kv.Key);
        var bytes = new List<byte>();
        foreach (var id in ids)
        {
            if (id == BosId || id == EosId || id == PadId || !inverse.TryGetValue((int)id, out var s))
            {
                continue;
            }
            var end = s.EndsWith("</w>", StringComparison.Ordinal);
            foreach (var ch in end ? s[..^4] : s)
            {
                bytes.Add(ByteMap.IndexOf(ch) is var i and >= 0 ? (byte)i : (byte)'?');
            }
            if (end)
            {
                bytes.Add((byte)' ');
            }
        }
        return Encoding.UTF8.GetString(bytes.ToArray()).Trim();
    }

    private string[] Bpe(string token)
    {
        if (_cache.TryGetValue(token, out var cached))
        {
            return cached;
        }
        var word = token.Select(c => c.ToString()).ToList();
        word[^1] += "</w>";
        while (word.Count > 1)
        {
            var best = -1;
            var bestRank = int.MaxValue;
            for (var i = 0; i < word.Count - 1; i++)
            {
                if (_ranks.TryGetValue((word[i], word[i + 1]), out var r) && r < bestRank)
                {
                    bestRank = r;
                    best = i;
                }
            }
            if (best < 0)
            {
                break;
            }
            var (a, b) = (word[best], word[best + 1]);
            var merged = new List<string>();
            for (var i = 0; i < word.Count; i++)
            {
                if (i < word.Count - 1 && word[i] == a && word[i + 1] == b)
                {
                    merged.Add(a + b);
                    i++;
                }
                else
                {
                    merged.Add(word[i]);
                }
            }
            word = merged;
        }
        var result = word.ToArray();
        if (_cache.Count < 65536)
        {
            _cache[token] = result;
        }
        return result;
    }

    /// <summary>GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards.</summary>
    private static string BuildByteMap()
    {
        var map = new char[256];
        var printable = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range('¡', '¬' - '¡' + 1)).Concat(Enumerable.Range('®', 'ÿ' - '®' + 1)).ToHashSet();
        var n = 0;
        for (var b = 0; b < 256; b++)
        {
            map[b] = printable.Contains(b) ? (char)b : (char)(256 + n++);
        }
        return new string(map);
    }

    /// <summary>The 256 byte symbols (and their <c>&lt;/w&gt;</c> forms): the base vocabulary every CLIP vocab starts with.</summary>
    public static IEnumerable<string> ByteSymbols() => ByteMap.Select(c => c.ToString());

    /// <summary>Reads tokenizer/ (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json).</summary>
    public static ClipTokenizer Load(string dir, int fallbackMaxLength)
    {
        var vocabPath = System.IO.Path.Combine(dir, "vocab.json");
        var mergesPath = System.IO.Path.Combine(dir, "merges.txt");
        foreach (var p in new[] { vocabPath, mergesPath })
        {
            if (!Common.SafeFiles.IsRegularFile(p))
            {
                throw new CheckpointException($"{p}: no such file; a CLIP tokenizer needs vocab.json and merges.txt");
            }
        }
        Dictionary<string, int> vocab;
        try
        {
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(vocabPath))
                ?? throw new CheckpointException($"{vocabPath}: expected a JSON object of token → id");
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{vocabPath}: expected a JSON object of token → id (line {e.LineNumber + 1})");
        }
        var merges = new List<(string, string)>();
        var lineNo = 0;
        foreach (var line in File.ReadLines(mergesPath))
        {
            lineNo++;
            if ((lineNo == 1 && line.StartsWith("#version", StringComparison.Ordinal)) || line.Length == 0)
            {
                continue;
            }
            var parts = line.Split(' ');
            if (parts.Length != 2)
            {
                throw new CheckpointException($"{mergesPath}: line {lineNo}: expected two symbols separated by one space");
            }
            merges.Add((parts[0], parts[1]));
        }
        // CLIP keeps the file's first 49152 − 256 − 2 merges (tokenization_clip.py); shorter files keep all.
        merges = merges.Take(49152 - 256 - 2).ToList();
        var maxLength = fallbackMaxLength;
        var pad = Eos;
        var cfgPath = System.IO.Path.Combine(dir, "tokenizer_config.json");
        if (File.Exists(cfgPath) && TryJson(cfgPath) is { } cfg)
        {
            if (cfg["model_max_length"] is JsonValue v && v.TryGetValue<double>(out var ml) && ml is >= 3 and <= 4096)
            {
                maxLength = (int)ml;
            }
            pad = Token(cfg["pad_token"]) ?? pad;
        }
        var specialPath = System.IO.Path.Combine(dir, "special_tokens_map.json");
        if (File.Exists(specialPath) && TryJson(specialPath) is { } special)
        {
            pad = Token(special["pad_token"]) ?? pad;
        }
        return new ClipTokenizer(vocab, merges, Math.Min(maxLength, fallbackMaxLength), pad);
    }

    private static JsonObject? TryJson(string path)
    {
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject;
        }
        catch (JsonException)
        {
            throw new CheckpointException($"{path}: not valid JSON");
        }
    }

    private static string? Token(JsonNode? n) => n switch
    {
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        JsonObject o when o["content"] is JsonValue c && c.TryGetValue<string>(out var s) => s,
        _ => null,
    };

    /// <summary>Writes vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json.</summary>
    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        File.WriteAllText(System.IO.Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(_vocab.OrderBy(kv => kv.Value).ToDictionary(kv => kv.Key, kv => kv.Value)));
        File.WriteAllLines(System.IO.Path.Combine(dir, "merges.txt"), new[] { "#version: 0.2" }.Concat(_merges.Select(m => $"{m.Item1} {m.Item2}")));
        File.WriteAllText(System.IO.Path.Combine(dir, "tokenizer_config.json"), new JsonObject
        {
            ["tokenizer_class"] = "CLIPTokenizer", ["model_max_length"] = MaxLength, ["bos_token"] = Bos, ["eos_token"] = Eos, ["unk_token"] = Eos, ["pad_token"] = PadToken, ["do_lower_case"] = true,
        }.ToJsonString());
        File.WriteAllText(System.IO.Path.Combine(dir, "special_tokens_map.json"), new JsonObject
        {
            ["bos_token"] = Bos, ["eos_token"] = Eos, ["unk_token"] = Eos, ["pad_token"] = PadToken,
        }.ToJsonString());
    }

    /// <summary>
    /// A small CLIP-format vocabulary for a closed word list (toy worlds): the 512 byte symbols, every prefix needed to
    /// merge each word into one <c>word&lt;/w&gt;</c> token, and the two specials, so the real BPE path runs on it.
    /// </summary>
    public static ClipTokenizer ForWords(IEnumerable<string> words, int maxLength)
    {
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var s in ByteSymbols())
        {
            vocab.TryAdd(s, vocab.Count);
        }
        foreach (var s in ByteSymbols())
        {
            vocab.TryAdd(s + "</w>", vocab.Count);
        }
        var merges = new List<(string, string)>();
        foreach (var word in words.Select(w => w.ToLowerInvariant()).Distinct())
        {
            var symbols = word.Select(c => c.ToString()).ToList();
            symbols[^1] += "</w>";
            var acc = symbols[0];
            for (var i = 1; i < symbols.Count; i++)
            {
                var merged = acc + symbols[i];
                if (!vocab.ContainsKey(merged))
                {
                    merges.Add((acc, symbols[i]));
                    vocab[merged] = vocab.Count;
                }
                acc = merged;
            }
        }
        vocab[Bos] = vocab.Count;
        vocab[Eos] = vocab.Count;
        return new ClipTokenizer(vocab, merges, maxLength);
    }
}
