using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;

namespace Pipelines.Models.Diffusion;

/// <summary>
/// Reads a diffusers/transformers config.json into a JsonObject and typed fields, naming the file and key of every
/// problem. Unknown keys are kept (the saver writes the object back as read), values outside what the runtime
/// implements are refused with the key named.
/// </summary>
internal sealed class ConfigReader(string path, JsonObject json)
{
    public string Path { get; } = path;
    public JsonObject Json { get; } = json;

    public static ConfigReader Open(string path)
    {
        if (!Common.SafeFiles.IsRegularFile(path))
        {
            throw new CheckpointException($"{path}: no such file; expected a config.json");
        }
        try
        {
            if (new FileInfo(path).Length > 4 << 20)
            {
                throw new CheckpointException($"{path}: larger than 4 MiB; expected a small JSON config");
            }
            return JsonNode.Parse(File.ReadAllText(path)) is JsonObject o
                ? new ConfigReader(path, o)
                : throw new CheckpointException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{path}: not valid JSON (line {e.LineNumber + 1}): {e.Message.Split('.')[0]}");
        }
    }

    private JsonNode? Node(string key) => Json.TryGetPropertyValue(key, out var n) ? n : null;

    private CheckpointException Bad(string key, string expected) =>
        new($"{Path}: $.{key}: expected {expected}, got {Node(key)?.ToJsonString() ?? "nothing"}");

    public int Int(string key, int? fallback = null)
    {
        var n = Node(key);
        if (n is null && fallback is { } f)
        {
            return f;
        }
        return n is JsonValue v && v.TryGetValue<int>(out var i) ? i
            : n is JsonValue d && d.TryGetValue<double>(out var x) && x == Math.Floor(x) && Math.Abs(x) < int.MaxValue ? (int)x
            : throw Bad(key, "an integer");
    }

    public int? IntOrNull(string key) => Node(key) is null ? null : Int(key);

    public double Double(string key, double fallback)
    {
        var n = Node(key);
        if (n is null)
        {
            return fallback;
        }
        return n is JsonValue v && v.TryGetValue<double>(out var d) && double.IsFinite(d) ? d : throw Bad(key, "a number");
    }

    public bool Bool(string key, bool fallback)
    {
        var n = Node(key);
        if (n is null)
        {
            return fallback;
        }
        return n is JsonValue v && v.TryGetValue<bool>(out var b) ? b : throw Bad(key, "true or false");
    }

    public string? String(string key, string? fallback = null)
    {
        var n = Node(key);
        if (n is null)
        {
            return fallback;
        }
        return n is JsonValue v && v.TryGetValue<string>(out var s) ? s : throw Bad(key, "a string");
    }

    public int[] Ints(string key, int[]? fallback = null)
    {
        var n = Node(key);
        if (n is null && fallback is not null)
        {
            return fallback;
        }
        if (n is JsonArray a && a.Count is > 0 and <= 16 && a.All(x => x is JsonValue v && v.TryGetValue<int>(out _)))
        {
            return a.Select(x => x!.GetValue<int>()).ToArray();
        }
        throw Bad(key, "a list of 1 to 16 integers");
    }

    public string[] Strings(string key, string[]? fallback = null)
    {
        var n = Node(key);
        if (n is null && fallback is not null)
        {
            return fallback;
        }
        if (n is JsonArray a && a.Count is > 0 and <= 16 && a.All(x => x is JsonValue v && v.TryGetValue<string>(out _)))
        {
            return a.Select(x => x!.GetValue<string>()).ToArray();
        }
        throw Bad(key, "a list of 1 to 16 strings");
    }

    /// <summary>An int, or a per-block list of ints (diffusers accepts both for head counts).</summary>
    public int[]? IntOrList(string key, int blocks)
    {
        var n = Node(key);
        if (n is null)
        {
            return null;
        }
        if (n is JsonValue)
        {
            var v = Int(key);
            return Enumerable.Repeat(v, blocks).ToArray();
        }
        var list = Ints(key);
        return list.Length == blocks ? list : throw Bad(key, $"an integer or a list of {blocks} integers (one per block)");
    }

    public void Reject(string key, Func<JsonNode?, bool> allowed, string expected)
    {
        if (!allowed(Node(key)))
        {
            throw new CheckpointException($"{Path}: $.{key}: this runtime supports only {expected}, got {Node(key)?.ToJsonString()}");
        }
    }

    public static bool IsNull(JsonNode? n) => n is null || n.GetValueKind() == JsonValueKind.Null;

    public void Positive(string key, int value, int max = 1 << 20)
    {
        if (value < 1 || value > max)
        {
            throw Bad(key, $"an integer in [1, {max}]");
        }
    }
}

/// <summary>diffusers' UNet2DConditionModel config (the fields SD 1.x/2.x use; others refused by name).</summary>
public sealed record UNetConfig
{
    public int InChannels { get; init; } = 4;
    public int OutChannels { get; init; } = 4;
    public int? SampleSize { get; init; } = 64;
    public int[] BlockOutChannels { get; init; } = [320, 640, 1280, 1280];
    public int LayersPerBlock { get; init; } = 2;
    public string[] DownBlockTypes { get; init; } = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"];
    public string[] UpBlockTypes { get; init; } = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"];
    public int CrossAttentionDim { get; init; } = 768;

    /// <summary>Heads per block (diffusers' attention_head_dim, which is the number of heads: its issue #2011).</summary>
    public int[] Heads { get; init; } = [8, 8, 8, 8];
    public int NormGroups { get; init; } = 32;
    public double NormEps { get; init; } = 1e-5;
    public bool FlipSinToCos { get; init; } = true;
    public int FreqShift { get; init; }
    public bool UseLinearProjection { get; init; }

    /// <summary>The JSON as read (or as built), written back by the saver.</summary>
    public JsonObject Json { get; init; } = new();

    public int TimeEmbedDim => 4 * BlockOutChannels[0];

    public static UNetConfig Read(string path)
    {
        var r = ConfigReader.Open(path);
        r.Reject("act_fn", n => ConfigReader.IsNull(n) || n!.ToString() == "silu", "\"silu\"");
        r.Reject("mid_block_type", n => ConfigReader.IsNull(n) || n!.ToString() == "UNetMidBlock2DCrossAttn", "\"UNetMidBlock2DCrossAttn\"");
        r.Reject("upcast_attention", n => ConfigReader.IsNull(n) || n!.ToString() == "false", "false");
        r.Reject("only_cross_attention", n => ConfigReader.IsNull(n) || n!.ToString() == "false", "false");
        r.Reject("dual_cross_attention", n => ConfigReader.IsNull(n) || n!.ToString() == "false", "false");
        r.Reject("resnet_time_scale_shift", n => ConfigReader.IsNull(n) || n!.ToString() == "default", "\"default\"");
        r.Reject("class_embed_type", ConfigReader.IsNull, "null");
        r.Reject("num_class_embeds", ConfigReader.IsNull, "null (class-conditioned UNets are not implemented)");
        r.Reject("addition_embed_type", ConfigReader.IsNull, "null (SDXL's added conditioning is not implemented)");
        r.Reject("encoder_hid_dim", ConfigReader.IsNull, "null");
        r.Reject("time_cond_proj_dim", ConfigReader.IsNull, "null (LCM's guidance embedding is not implemented)");
        r.Reject("transformer_layers_per_block", n => ConfigReader.IsNull(n) || n!.ToString() == "1", "1");
        var blocks = r.Ints("block_out_channels", [320, 640, 1280, 1280]);
        var heads = r.IntOrList("num_attention_heads", blocks.Length) ?? r.IntOrList("attention_head_dim", blocks.Length) ?? Enumerable.Repeat(8, blocks.Length).ToArray();
        var c = new UNetConfig
        {
            InChannels = r.Int("in_channels", 4),
            OutChannels = r.Int("out_channels", 4),
            SampleSize = r.IntOrNull("sample_size"),
            BlockOutChannels = blocks,
            LayersPerBlock = r.Int("layers_per_block", 2),
            DownBlockTypes = r.Strings("down_block_types", ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]),
            UpBlockTypes = r.Strings("up_block_types", ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]),
            CrossAttentionDim = r.Int("cross_attention_dim", 1280),
            Heads = heads,
            NormGroups = r.Int("norm_num_groups", 32),
            NormEps = r.Double("norm_eps", 1e-5),
            FlipSinToCos = r.Bool("flip_sin_to_cos", true),
            FreqShift = r.Int("freq_shift", 0),
            UseLinearProjection = r.Bool("use_linear_projection", false),
            Json = r.Json,
        };
        c.Check(path);
        return c;
    }

    /// <summary>Refuses shapes the blocks cannot be built from, naming the key.</summary>
    public void Check(string path)
    {
        string[] downs = ["CrossAttnDownBlock2D", "DownBlock2D"], ups = ["CrossAttnUpBlock2D", "UpBlock2D"];
        var n = BlockOutChannels.Length;
        if (DownBlockTypes.Length != n || UpBlockTypes.Length != n)
        {
            throw new CheckpointException($"{path}: $.down_block_types/$.up_block_types: expected {n} entries each, one per block_out_channels entry");
        }
        if (DownBlockTypes.FirstOrDefault(t => !downs.Contains(t)) is { } d)
        {
            throw new CheckpointException($"{path}: $.down_block_types: \"{d}\" is not supported (expected CrossAttnDownBlock2D or DownBlock2D)");
        }
        if (UpBlockTypes.FirstOrDefault(t => !ups.Contains(t)) is { } u)
        {
            throw new CheckpointException($"{path}: $.up_block_types: \"{u}\" is not supported (expected CrossAttnUpBlock2D or UpBlock2D)");
        }
        if (InChannels is < 1 or > 64 || OutChannels is < 1 or > 64 || LayersPerBlock is < 1 or > 8 || CrossAttentionDim is < 1 or > 8192 || NormGroups < 1)
        {
            throw new CheckpointException($"{path}: in_channels/out_channels (1–64), layers_per_block (1–8), cross_attention_dim (1–8192) or norm_num_groups (≥ 1) out of range");
        }
        foreach (var (ch, i) in BlockOutChannels.Select((c, i) => (c, i)))
        {
            if (ch is < 1 or > 8192 || ch % NormGroups != 0)
            {
                throw new CheckpointException($"{path}: $.block_out_channels[{i}]: {ch} must be in [1, 8192] and divisible by norm_num_groups {NormGroups}");
            }
            if (Heads[i] < 1 || ch % Heads[i] != 0)
            {
                throw new CheckpointException($"{path}: $.attention_head_dim: block {i}'s {ch} channels do not split into {Heads[i]} heads");
            }
        }
    }

    /// <summary>The config as diffusers writes it.</summary>
    public JsonObject ToJson()
    {
        var o = JsonNode.Parse(Json.ToJsonString())!.AsObject();
        o["_class_name"] ??= "UNet2DConditionModel";
        o["in_channels"] = InChannels;
        o["out_channels"] = OutChannels;
        o["sample_size"] = SampleSize;
        o["block_out_channels"] = new JsonArray(BlockOutChannels.Select(x => (JsonNode?)x).ToArray());
        o["layers_per_block"] = LayersPerBlock;
        o["down_block_types"] = new JsonArray(DownBlockTypes.Select(x => (JsonNode?)x).ToArray());
        o["up_block_types"] = new JsonArray(UpBlockTypes.Select(x => (JsonNode?)x).ToArray());
        o["mid_block_type"] = "UNetMidBlock2DCrossAttn";
        o["cross_attention_dim"] = CrossAttentionDim;
        o["attention_head_dim"] = Heads.Distinct().Count() == 1 ? Heads[0] : new JsonArray(Heads.Select(x => (JsonNode?)x).ToArray());
        o["norm_num_groups"] = NormGroups;
        o["norm_eps"] = NormEps;
        o["act_fn"] = "silu";
        o["flip_sin_to_cos"] = FlipSinToCos;
        o["freq_shift"] = FreqShift;
        o["use_linear_projection"] = UseLinearProjection;
        return o;
    }
}

/// <summary>diffusers' AutoencoderKL config.</summary>
public sealed record VaeConfig
{
    public int InChannels { get; init; } = 3;
    public int OutChannels { get; init; } = 3;
    public int LatentChannels { get; init; } = 4;
    public int[] BlockOutChannels { get; init; } = [128, 256, 512, 512];
    public int LayersPerBlock { get; init; } = 2;
    public int NormGroups { get; init; } = 32;
    public double ScalingFactor { get; init; } = 0.18215;
    public bool UseQuantConv { get; init; } = true;
    public bool UsePostQuantConv { get; init; } = true;
    public bool MidBlockAddAttention { get; init; } = true;
    public JsonObject Json { get; init; } = new();

    /// <summary>How many times the encoder halves the sides.</summary>
    public int Downsamplings => BlockOutChannels.Length - 1;

    public static VaeConfig Read(string path)
    {
        var r = ConfigReader.Open(path);
        var blocks = r.Ints("block_out_channels", [64]);
        r.Reject("down_block_types", n => ConfigReader.IsNull(n) || n!.AsArray().All(x => x?.ToString() == "DownEncoderBlock2D"), "DownEncoderBlock2D blocks");
        r.Reject("up_block_types", n => ConfigReader.IsNull(n) || n!.AsArray().All(x => x?.ToString() == "UpDecoderBlock2D"), "UpDecoderBlock2D blocks");
        r.Reject("act_fn", n => ConfigReader.IsNull(n) || n!.ToString() == "silu", "\"silu\"");
        var c = new VaeConfig
        {
            InChannels = r.Int("in_channels", 3),
            OutChannels = r.Int("out_channels", 3),
            LatentChannels = r.Int("latent_channels", 4),
            BlockOutChannels = blocks,
            LayersPerBlock = r.Int("layers_per_block", 1),
            NormGroups = r.Int("norm_num_groups", 32),
            ScalingFactor = r.Double("scaling_factor", 0.18215),
            UseQuantConv = r.Bool("use_quant_conv", true),
            UsePostQuantConv = r.Bool("use_post_quant_conv", true),
            MidBlockAddAttention = r.Bool("mid_block_add_attention", true),
            Json = r.Json,
        };
        foreach (var (ch, i) in blocks.Select((ch, i) => (ch, i)))
        {
            if (ch is < 1 or > 8192 || c.NormGroups < 1 || ch % c.NormGroups != 0)
            {
                throw new CheckpointException($"{path}: $.block_out_channels[{i}]: {ch} must be in [1, 8192] and divisible by norm_num_groups {c.NormGroups}");
            }
        }
        if (c.LayersPerBlock is < 1 or > 8 || c.LatentChannels is < 1 or > 64 || c.InChannels is < 1 or > 64 || c.OutChannels is < 1 or > 64)
        {
            throw new CheckpointException($"{path}: layers_per_block (1–8), latent_channels, in_channels or out_channels (1–64) out of range");
        }
        return c;
    }

    public JsonObject ToJson()
    {
        var o = JsonNode.Parse(Json.ToJsonString())!.AsObject();
        o["_class_name"] ??= "AutoencoderKL";
        o["in_channels"] = InChannels;
        o["out_channels"] = OutChannels;
        o["latent_channels"] = LatentChannels;
        o["block_out_channels"] = new JsonArray(BlockOutChannels.Select(x => (JsonNode?)x).ToArray());
        o["down_block_types"] = new JsonArray(BlockOutChannels.Select(_ => (JsonNode?)"DownEncoderBlock2D").ToArray());
        o["up_block_types"] = new JsonArray(BlockOutChannels.Select(_ => (JsonNode?)"UpDecoderBlock2D").ToArray());
        o["layers_per_block"] = LayersPerBlock;
        o["norm_num_groups"] = NormGroups;
        o["scaling_factor"] = ScalingFactor;
        o["act_fn"] = "silu";
        return o;
    }
}

/// <summary>transformers' CLIPTextConfig (text_encoder/config.json).</summary>
public sealed record ClipTextConfig
{
    public int HiddenSize { get; init; } = 768;
    public int IntermediateSize { get; init; } = 3072;
    public int Layers { get; init; } = 12;
    public int Heads { get; init; } = 12;
    public int MaxPositions { get; init; } = 77;
    public int VocabSize { get; init; } = 49408;
    public string HiddenAct { get; init; } = "quick_gelu";
    public double LayerNormEps { get; init; } = 1e-5;
    public JsonObject Json { get; init; } = new();

    public static ClipTextConfig Read(string path)
    {
        var r = ConfigReader.Open(path);
        r.Reject("hidden_act", n => ConfigReader.IsNull(n) || n!.ToString() is "quick_gelu" or "gelu", "\"quick_gelu\" or \"gelu\"");
        var c = new ClipTextConfig
        {
            HiddenSize = r.Int("hidden_size", 512),
            IntermediateSize = r.Int("intermediate_size", 2048),
            Layers = r.Int("num_hidden_layers", 12),
            Heads = r.Int("num_attention_heads", 8),
            MaxPositions = r.Int("max_position_embeddings", 77),
            VocabSize = r.Int("vocab_size", 49408),
            HiddenAct = r.String("hidden_act", "quick_gelu")!,
            LayerNormEps = r.Double("layer_norm_eps", 1e-5),
            Json = r.Json,
        };
        r.Positive("hidden_size", c.HiddenSize, 16384);
        r.Positive("intermediate_size", c.IntermediateSize, 65536);
        r.Positive("num_hidden_layers", c.Layers, 256);
        r.Positive("max_position_embeddings", c.MaxPositions, 4096);
        r.Positive("vocab_size", c.VocabSize, 1 << 20);
        if (c.Heads < 1 || c.HiddenSize % c.Heads != 0)
        {
            throw new CheckpointException($"{path}: $.num_attention_heads: {c.HiddenSize} does not split into {c.Heads} heads");
        }
        return c;
    }

    public JsonObject ToJson()
    {
        var o = JsonNode.Parse(Json.ToJsonString())!.AsObject();
        o["architectures"] ??= new JsonArray("CLIPTextModel");
        o["model_type"] ??= "clip_text_model";
        o["hidden_size"] = HiddenSize;
        o["intermediate_size"] = IntermediateSize;
        o["num_hidden_layers"] = Layers;
        o["num_attention_heads"] = Heads;
        o["max_position_embeddings"] = MaxPositions;
        o["vocab_size"] = VocabSize;
        o["hidden_act"] = HiddenAct;
        o["layer_norm_eps"] = LayerNormEps;
        return o;
    }
}
