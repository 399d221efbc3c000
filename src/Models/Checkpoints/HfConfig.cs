using System.Text.Json.Nodes;
using Pipelines.Models.Transformer;

namespace Pipelines.Models.Checkpoints;

/// <summary>Reads a HF config.json into a <see cref="TransformerConfig"/>, and writes one back.</summary>
public static class HfConfig
{
    public static readonly IReadOnlyList<string> Supported = ["gpt2", "gpt_neox", "llama", "qwen2"];

    public static TransformerConfig Read(string path)
    {
        JsonObject json;
        if (!Common.SafeFiles.IsRegularFile(path))
        {
            throw new CheckpointException($"{path}: not a regular file; expected a JSON config");
        }
        if (new FileInfo(path).Length > MaxConfigBytes)
        {
            throw new CheckpointException($"{path}: {new FileInfo(path).Length:N0} bytes; a config is at most {MaxConfigBytes:N0}");
        }
        try
        {
            json = JsonNode.Parse(File.ReadAllText(path), documentOptions: new System.Text.Json.JsonDocumentOptions { MaxDepth = 16 })?.AsObject() ?? throw new CheckpointException($"{path}: empty");
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or IOException or InvalidOperationException or ArgumentException)
        {
            throw new CheckpointException($"{path}: not a readable JSON config ({e.Message.Split(" LineNumber:")[0].Split(" Path:")[0].TrimEnd('.')})", e);
        }
        var type = json["model_type"]?.GetValue<string>()
            ?? throw new CheckpointException($"{path}: no \"model_type\"; expected one of: {string.Join(", ", Supported)}");
        try
        {
            return type switch
            {
                "gpt2" => Gpt2(json),
                "gpt_neox" => NeoX(json),
                "llama" => Llama(json, path, qwen: false),
                "qwen2" => Llama(json, path, qwen: true),
                _ => throw new CheckpointException($"{path}: unsupported model_type \"{type}\"; supported: {string.Join(", ", Supported)}"),
            };
        }
        catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException)
        {
            throw new CheckpointException($"{path}: a required field is missing or of the wrong type for model_type \"{type}\" ({e.Message})", e);
        }
        catch (Exception e) when (e is DivideByZeroException or OverflowException or ArgumentException)
        {
            throw new CheckpointException($"{path}: the sizes do not fit together (a zero or out-of-range head count or width)", e);
        }
    }

    /// <summary>A config.json is a few kilobytes; more than this is not a config.</summary>
    public const long MaxConfigBytes = 4L << 20;

    /// <summary>
    /// Checks a config before anything is allocated: positive sizes that divide as they must, and parameters that fit
    /// in <paramref name="maxBytes"/> (default: this machine's available memory, or PIPELINES_MAX_MODEL_BYTES).
    /// </summary>
    public static void CheckSizes(TransformerConfig config, string path, long? maxBytes = null)
    {
        if (config.Problems() is [var first, ..])
        {
            throw new CheckpointException($"{path}: {first}");
        }
        var limit = maxBytes ?? MaxModelBytes();
        var bytes = config.EstimatedBytes();
        if (bytes is null || bytes > limit)
        {
            throw new CheckpointException($"{path}: the config describes {(bytes is null ? "more parameters than can be counted" : $"{bytes.Value / 1e9:F1} GB of parameters (f32)")}, " +
                $"more than the {limit / 1e9:F1} GB allowed (PIPELINES_MAX_MODEL_BYTES, default: available memory)");
        }
    }

    private static long MaxModelBytes() =>
        long.TryParse(Environment.GetEnvironmentVariable("PIPELINES_MAX_MODEL_BYTES"), out var b) && b > 0 ? b
            : Math.Max(1L << 30, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes);

    private static int Int(JsonObject j, string name) => j[name]?.GetValue<int>() ?? throw new CheckpointException($"config.json: missing \"{name}\"");

    private static int? OptInt(JsonObject j, string name) => j[name] is JsonValue v && v.TryGetValue<int>(out var i) ? i : null;

    private static double Num(JsonObject j, string name, double fallback) => j[name] is JsonValue v && v.TryGetValue<double>(out var d) ? d : fallback;

    private static bool Bool(JsonObject j, string name, bool fallback) => j[name] is JsonValue v && v.TryGetValue<bool>(out var b) ? b : fallback;

    private static Activation Act(string? name) => name switch
    {
        "gelu_new" or "gelu_pytorch_tanh" or "gelu_fast" => Activation.GeluNew,
        "gelu" => Activation.Gelu,
        "silu" or "swish" => Activation.Silu,
        "relu" => Activation.Relu,
        _ => throw new CheckpointException($"config.json: unsupported activation \"{name}\""),
    };

    private static TransformerConfig Gpt2(JsonObject j)
    {
        var d = Int(j, "n_embd");
        return new TransformerConfig
        {
            Architecture = "gpt2", DModel = d, NLayers = Int(j, "n_layer"), NHeads = Int(j, "n_head"),
            DMlp = OptInt(j, "n_inner") ?? 4 * d, DVocab = Int(j, "vocab_size"), NCtx = OptInt(j, "n_positions") ?? 1024,
            NormEps = Num(j, "layer_norm_epsilon", 1e-5), Act = Act(j["activation_function"]?.GetValue<string>() ?? "gelu_new"),
            TiedEmbeddings = Bool(j, "tie_word_embeddings", true), BosTokenId = OptInt(j, "bos_token_id"), EosTokenId = OptInt(j, "eos_token_id"),
            PadTokenId = OptInt(j, "pad_token_id"),
        };
    }

    private static TransformerConfig NeoX(JsonObject j)
    {
        var d = Int(j, "hidden_size");
        var heads = Int(j, "num_attention_heads");
        return new TransformerConfig
        {
            Architecture = "gpt_neox", DModel = d, NLayers = Int(j, "num_hidden_layers"), NHeads = heads,
            DMlp = OptInt(j, "intermediate_size") ?? 4 * d, DVocab = Int(j, "vocab_size"), NCtx = OptInt(j, "max_position_embeddings") ?? 2048,
            NormEps = Num(j, "layer_norm_eps", 1e-5), Positional = PositionalKind.Rotary,
            RotaryDim = (int)(d / heads * Num(j, "rotary_pct", 0.25)), RotaryBase = Num(j, "rotary_emb_base", Num(j, "rope_theta", 10000)),
            Act = Act(j["hidden_act"]?.GetValue<string>() ?? "gelu"), ParallelAttnMlp = Bool(j, "use_parallel_residual", true),
            TiedEmbeddings = Bool(j, "tie_word_embeddings", false), DefaultPrependBos = false,
            BosTokenId = OptInt(j, "bos_token_id"), EosTokenId = OptInt(j, "eos_token_id"), PadTokenId = OptInt(j, "pad_token_id"),
            QkvBias = Bool(j, "attention_bias", true), AttnOutBias = Bool(j, "attention_bias", true),
        };
    }

    private static TransformerConfig Llama(JsonObject j, string path, bool qwen)
    {
        if (j["rope_scaling"] is JsonObject scaling && (scaling["rope_type"] ?? scaling["type"])?.GetValue<string>() is { } kind && kind != "default")
        {
            throw new CheckpointException($"{path}: rope_scaling type \"{kind}\" is not supported yet (only the default rotary)");
        }
        var d = Int(j, "hidden_size");
        var heads = Int(j, "num_attention_heads");
        return new TransformerConfig
        {
            Architecture = qwen ? "qwen2" : "llama", DModel = d, NLayers = Int(j, "num_hidden_layers"), NHeads = heads,
            NKvHeads = OptInt(j, "num_key_value_heads") ?? heads, DHead = OptInt(j, "head_dim") ?? d / heads,
            DMlp = Int(j, "intermediate_size"), DVocab = Int(j, "vocab_size"), NCtx = OptInt(j, "max_position_embeddings") ?? 2048,
            Norm = NormKind.RmsNorm, NormBias = false, NormEps = Num(j, "rms_norm_eps", 1e-6),
            Positional = PositionalKind.Rotary, RotaryBase = Num(j, "rope_theta", qwen ? 1000000 : 10000),
            Act = Act(j["hidden_act"]?.GetValue<string>() ?? "silu"), GatedMlp = true,
            QkvBias = qwen || Bool(j, "attention_bias", false), AttnOutBias = !qwen && Bool(j, "attention_bias", false),
            MlpBias = Bool(j, "mlp_bias", false), TiedEmbeddings = Bool(j, "tie_word_embeddings", false),
            DefaultPrependBos = !qwen, BosTokenId = OptInt(j, "bos_token_id"), EosTokenId = OptInt(j, "eos_token_id"), PadTokenId = OptInt(j, "pad_token_id"),
        };
    }

    /// <summary>The HF config.json for a config (what <see cref="Read"/> reads back to the same config).</summary>
    public static JsonObject Write(TransformerConfig c)
    {
        var act = c.Act switch { Activation.GeluNew => "gelu_new", Activation.Gelu => "gelu", Activation.Silu => "silu", _ => "relu" };
        var j = c.Architecture switch
        {
            "gpt2" => new JsonObject
            {
                ["architectures"] = new JsonArray("GPT2LMHeadModel"), ["model_type"] = "gpt2", ["n_embd"] = c.DModel, ["n_layer"] = c.NLayers,
                ["n_head"] = c.NHeads, ["n_inner"] = c.DMlp, ["vocab_size"] = c.DVocab, ["n_positions"] = c.NCtx,
                ["layer_norm_epsilon"] = c.NormEps, ["activation_function"] = act, ["tie_word_embeddings"] = c.TiedEmbeddings,
            },
            "gpt_neox" => new JsonObject
            {
                ["architectures"] = new JsonArray("GPTNeoXForCausalLM"), ["model_type"] = "gpt_neox", ["hidden_size"] = c.DModel,
                ["num_hidden_layers"] = c.NLayers, ["num_attention_heads"] = c.NHeads, ["intermediate_size"] = c.DMlp, ["vocab_size"] = c.DVocab,
                ["max_position_embeddings"] = c.NCtx, ["layer_norm_eps"] = c.NormEps, ["rotary_pct"] = (double)c.RotaryDims / c.HeadDim,
                ["rotary_emb_base"] = c.RotaryBase, ["hidden_act"] = act, ["use_parallel_residual"] = c.ParallelAttnMlp,
                ["tie_word_embeddings"] = c.TiedEmbeddings,
            },
            _ => new JsonObject
            {
                ["architectures"] = new JsonArray(c.Architecture == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"), ["model_type"] = c.Architecture,
                ["hidden_size"] = c.DModel, ["num_hidden_layers"] = c.NLayers, ["num_attention_heads"] = c.NHeads, ["num_key_value_heads"] = c.KvHeads,
                ["head_dim"] = c.HeadDim, ["intermediate_size"] = c.DMlp, ["vocab_size"] = c.DVocab, ["max_position_embeddings"] = c.NCtx,
                ["rms_norm_eps"] = c.NormEps, ["rope_theta"] = c.RotaryBase, ["hidden_act"] = act, ["tie_word_embeddings"] = c.TiedEmbeddings,
                ["attention_bias"] = c.Architecture == "llama" && c.QkvBias, ["mlp_bias"] = c.MlpBias,
            },
        };
        if (c.BosTokenId is { } bos)
        {
            j["bos_token_id"] = bos;
        }
        if (c.EosTokenId is { } eos)
        {
            j["eos_token_id"] = eos;
        }
        if (c.PadTokenId is { } pad)
        {
            j["pad_token_id"] = pad;
        }
        j["torch_dtype"] = "float32";
        return j;
    }
}
