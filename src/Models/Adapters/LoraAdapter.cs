using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Pipelines.Models.Adapters;

/// <summary>
/// One place a LoRA pair sits: a linear module of the HF checkpoint (its PEFT path, e.g.
/// <c>model.layers.3.self_attn.q_proj</c> or GPT-2's fused <c>transformer.h.0.attn.c_attn</c>), with its input and output
/// widths in nn.Linear terms.
/// </summary>
public sealed record LoraSite(int Layer, string Path, string Module, long In, long Out);

/// <summary>
/// LoRA adapters on a <see cref="HookedTransformer"/>: per site, A [r, in] and B [out, r] in PEFT's nn.Linear convention,
/// so the site's weight becomes W + scale · (alpha / r) · B A. Sites: q, k, v, o, gate, up, down (Llama, Qwen2) and
/// GPT-2's c_attn, attn c_proj, c_fc, mlp c_proj. Attached, the update is added at each forward (unmerged, trainable
/// with the base frozen); <see cref="Merge"/> folds it into the weights and <see cref="Unmerge"/> takes it out again.
/// Reads and writes PEFT's format (adapter_config.json + adapter_model.safetensors, PEFT's key names).
/// </summary>
public sealed class LoraAdapter : nn.Module
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";
    private const string KeyPrefix = "base_model.model.";

    private readonly TransformerConfig _cfg;
    private readonly List<(LoraSite Site, Parameter A, Parameter B, double Scaling)> _pairs = [];
    private HookedTransformer? _attached;

    /// <summary>The adapter's alpha (scaling = alpha / r, or alpha / √r with rsLoRA).</summary>
    public double Alpha { get; }

    /// <summary>Dropout on the adapter's input during training, as PEFT's lora_dropout; kept in the config file.</summary>
    /// <remarks>Recorded and written, not applied: the update is added to the weights, so there is no separate input path to drop.</remarks>
    public double Dropout { get; }

    public bool UseRsLora { get; }

    /// <summary>A runtime multiplier of every update (0: the base model; 1: the adapter as trained; negative: reversed).</summary>
    public double Scale { get; set; } = 1.0;

    public bool IsMerged { get; private set; }

    public IReadOnlyList<LoraSite> Sites => _pairs.Select(p => p.Site).ToList();

    private LoraAdapter(TransformerConfig cfg, double alpha, double dropout, bool rsLora) : base("lora")
    {
        _cfg = cfg;
        Alpha = alpha;
        Dropout = dropout;
        UseRsLora = rsLora;
    }

    /// <summary>Every LoRA site of an architecture, by layer.</summary>
    public static IReadOnlyList<LoraSite> AllSites(TransformerConfig c)
    {
        long d = c.DModel, q = (long)c.NHeads * c.HeadDim, kv = (long)c.KvHeads * c.HeadDim, m = c.DMlp;
        var sites = new List<LoraSite>();
        for (var l = 0; l < c.NLayers; l++)
        {
            switch (c.Architecture)
            {
                case "gpt2":
                    sites.Add(new LoraSite(l, $"transformer.h.{l}.attn.c_attn", "c_attn", d, 3 * d));
                    sites.Add(new LoraSite(l, $"transformer.h.{l}.attn.c_proj", "c_proj", d, d));
                    sites.Add(new LoraSite(l, $"transformer.h.{l}.mlp.c_fc", "c_fc", d, m));
                    sites.Add(new LoraSite(l, $"transformer.h.{l}.mlp.c_proj", "c_proj", m, d));
                    break;
                case "llama" or "qwen2":
                    sites.Add(new LoraSite(l, $"model.layers.{l}.self_attn.q_proj", "q_proj", d, q));
                    sites.Add(new LoraSite(l, $"model.layers.{l}.self_attn.k_proj", "k_proj", d, kv));
                    sites.Add(new LoraSite(l, $"model.layers.{l}.self_attn.v_proj", "v_proj", d, kv));
                    sites.Add(new LoraSite(l, $"model.layers.{l}.self_attn.o_proj", "o_proj", q, d));
                    sites.Add(new LoraSite(l, $"model.layers.{l}.mlp.gate_proj", "gate_proj", d, m));
                    sites.Add(new LoraSite(l, $"model.layers.{l}.mlp.up_proj", "up_proj", d, m));
                    sites.Add(new LoraSite(l, $"model.layers.{l}.mlp.down_proj", "down_proj", m, d));
                    break;
                default:
                    throw new CheckpointException($"LoRA adapters are supported on gpt2, llama and qwen2 models, not {c.Architecture}");
            }
        }
        return sites;
    }

    private static readonly Dictionary<string, string> ShortNames = new(StringComparer.Ordinal)
    {
        ["q"] = "q_proj", ["k"] = "k_proj", ["v"] = "v_proj", ["o"] = "o_proj", ["gate"] = "gate_proj", ["up"] = "up_proj", ["down"] = "down_proj",
    };

    /// <summary>
    /// A new adapter for training: A uniform in ±1/√in (PEFT's Kaiming init), B zero (so it starts as the base model),
    /// on the named modules (q, k, v, o, gate, up, down, or PEFT's names) of the given layers (null: all).
    /// </summary>
    public static LoraAdapter Create(TransformerConfig cfg, IEnumerable<string> targets, int rank, double alpha, IReadOnlyCollection<int>? layers = null, double dropout = 0, bool rsLora = false, long seed = 0)
    {
        if (rank < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(rank), "a LoRA rank is at least 1");
        }
        var wanted = targets.Select(t => ShortNames.GetValueOrDefault(t, t)).ToHashSet(StringComparer.Ordinal);
        var adapter = new LoraAdapter(cfg, alpha, dropout, rsLora);
        var sites = AllSites(cfg).Where(s => wanted.Contains(s.Module) && (layers is null || layers.Contains(s.Layer))).ToList();
        var unknown = wanted.Where(w => AllSites(cfg).All(s => s.Module != w)).ToList();
        if (unknown.Count > 0 || sites.Count == 0)
        {
            throw new CheckpointException($"no LoRA site named {string.Join(", ", unknown.DefaultIfEmpty(string.Join(", ", wanted)))} in this {cfg.Architecture} model (sites: {string.Join(", ", AllSites(cfg).Select(s => s.Module).Distinct())})");
        }
        using var generator = new Generator((ulong)seed);
        foreach (var s in sites)
        {
            var a = LoraMath.KaimingDown([rank, s.In], s.In, Math.Sqrt(5), generator);
            adapter.Add(s, a, zeros(s.Out, rank), rank);
        }
        return adapter;
    }

    private void Add(LoraSite site, Tensor a, Tensor b, int rank)
    {
        var pa = new Parameter(a, requires_grad: true);
        var pb = new Parameter(b, requires_grad: true);
        var key = site.Path.Replace('.', '_');
        register_parameter(key + "_A", pa);
        register_parameter(key + "_B", pb);
        _pairs.Add((site, pa, pb, LoraMath.Scaling(Alpha, rank, UseRsLora)));
    }

    /// <summary>The update of one weight of one layer in the runtime's layout, or null when no pair touches it.</summary>
    public Tensor? Delta(int layer, string weight)
    {
        Tensor? total = null;
        foreach (var (site, a, b, scaling) in _pairs)
        {
            if (site.Layer != layer)
            {
                continue;
            }
            var part = Part(site, weight);
            if (part is null)
            {
                continue;
            }
            // [in, out]: the update as a Conv1D / transposed-linear weight, which every mapping below starts from.
            var conv = matmul(b, a).t().mul(Scalars.Of(scaling * Scale));
            var delta = ToLayout(conv, weight, part.Value);
            total = total is null ? delta : total.Plus(delta);
        }
        return total;
    }

    /// <summary>Which slice of a site feeds a weight: -1 for the whole site, 0/1/2 for GPT-2's fused q/k/v; null: none.</summary>
    private static int? Part(LoraSite site, string weight) => (site.Module, weight) switch
    {
        ("c_attn", "W_Q") => 0,
        ("c_attn", "W_K") => 1,
        ("c_attn", "W_V") => 2,
        ("c_proj", "W_O") when site.Path.Contains(".attn.", StringComparison.Ordinal) => -1,
        ("c_proj", "W_out") when site.Path.Contains(".mlp.", StringComparison.Ordinal) => -1,
        ("c_fc", "W_in") => -1,
        ("q_proj", "W_Q") or ("k_proj", "W_K") or ("v_proj", "W_V") or ("o_proj", "W_O") => -1,
        ("gate_proj", "W_gate") or ("up_proj", "W_in") or ("down_proj", "W_out") => -1,
        _ => null,
    };

    private Tensor ToLayout(Tensor conv, string weight, int part)
    {
        long d = _cfg.DModel, dh = _cfg.HeadDim;
        if (part >= 0)
        {
            conv = conv.split(d, 1)[part];
        }
        return weight switch
        {
            "W_Q" => conv.reshape(d, _cfg.NHeads, dh).permute(1, 0, 2),
            "W_K" or "W_V" => conv.reshape(d, _cfg.KvHeads, dh).permute(1, 0, 2),
            "W_O" => conv.reshape(_cfg.NHeads, dh, d),
            _ => conv,
        };
    }

    /// <summary>Adds the updates at every forward of <paramref name="model"/> (unmerged).</summary>
    public void Attach(HookedTransformer model)
    {
        if (_attached is not null)
        {
            throw new InvalidOperationException("this adapter is already attached");
        }
        _attached = model;
        foreach (var layer in _pairs.Select(p => p.Site.Layer).Distinct())
        {
            var l = layer;
            model.blocks[l].attn.WeightDelta = w => IsMerged ? null : Delta(l, w);
            model.blocks[l].mlp.WeightDelta = w => IsMerged ? null : Delta(l, w);
        }
    }

    public void Detach()
    {
        if (_attached is null)
        {
            return;
        }
        if (IsMerged)
        {
            Unmerge();
        }
        foreach (var l in _pairs.Select(p => p.Site.Layer).Distinct())
        {
            _attached.blocks[l].attn.WeightDelta = null;
            _attached.blocks[l].mlp.WeightDelta = null;
        }
        _attached = null;
    }

    /// <summary>Folds the updates (at the current <see cref="Scale"/>) into the attached model's weights.</summary>
    public void Merge() => Fold(+1);

    /// <summary>Takes merged updates out of the weights again.</summary>
    public void Unmerge() => Fold(-1);

    private void Fold(int sign)
    {
        var model = _attached ?? throw new InvalidOperationException("attach the adapter to a model first");
        if (IsMerged == (sign > 0))
        {
            return;
        }
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        foreach (var l in _pairs.Select(p => p.Site.Layer).Distinct())
        {
            var attn = model.blocks[l].attn;
            var mlp = model.blocks[l].mlp;
            foreach (var (name, w) in new (string, Tensor?)[] { ("W_Q", attn.W_Q), ("W_K", attn.W_K), ("W_V", attn.W_V), ("W_O", attn.W_O), ("W_in", mlp.W_in), ("W_gate", mlp.W_gate), ("W_out", mlp.W_out) })
            {
                if (w is not null && Delta(l, name) is { } delta)
                {
                    w.add_(delta.to(w.dtype).to(w.device), alpha: Scalars.Of(sign));
                }
            }
        }
        IsMerged = sign > 0;
    }

    /// <summary>Writes the adapter in PEFT's format: adapter_config.json and adapter_model.safetensors.</summary>
    public void Save(string directory, string? baseModel = null)
    {
        Directory.CreateDirectory(directory);
        var ranks = _pairs.Select(p => p.A.shape[0]).Distinct().ToList();
        var layers = _pairs.Select(p => p.Site.Layer).Distinct().Order().ToList();
        var config = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = "CAUSAL_LM",
            ["base_model_name_or_path"] = baseModel,
            ["r"] = ranks[0],
            ["lora_alpha"] = Alpha,
            ["lora_dropout"] = Dropout,
            ["use_rslora"] = UseRsLora,
            ["target_modules"] = new JsonArray(_pairs.Select(p => p.Site.Module).Distinct().Order(StringComparer.Ordinal).Select(m => (JsonNode)m).ToArray()),
            ["layers_to_transform"] = layers.Count == _cfg.NLayers ? null : new JsonArray(layers.Select(l => (JsonNode)l).ToArray()),
            ["fan_in_fan_out"] = _cfg.Architecture == "gpt2",
            ["bias"] = "none",
            ["inference_mode"] = true,
            ["rank_pattern"] = new JsonObject(_pairs.Where(p => p.A.shape[0] != ranks[0]).Select(p => KeyValuePair.Create(p.Site.Path, (JsonNode?)p.A.shape[0]))),
        };
        File.WriteAllText(System.IO.Path.Combine(directory, ConfigFile), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
        using var scope = NewDisposeScope();
        SafetensorsFile.Write(System.IO.Path.Combine(directory, WeightsFile), _pairs.SelectMany(p => new[]
        {
            (KeyPrefix + p.Site.Path + ".lora_A.weight", p.A.detach().cpu().contiguous()),
            (KeyPrefix + p.Site.Path + ".lora_B.weight", p.B.detach().cpu().contiguous()),
        }), new Dictionary<string, string> { ["format"] = "pt" });
    }

    private static readonly Regex KeyPattern = new(@"^(?:base_model\.model\.)?(?<path>.+)\.lora_(?<ab>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$", RegexOptions.CultureInvariant);

    /// <summary>
    /// Reads a PEFT LoRA adapter directory for a model of configuration <paramref name="cfg"/>. Every key must name a
    /// site of this architecture with the shapes its widths need; anything else is one clear error naming the file.
    /// </summary>
    public static LoraAdapter Load(string directory, TransformerConfig cfg, Device? device = null)
    {
        var configPath = System.IO.Path.Combine(directory, ConfigFile);
        var weightsPath = System.IO.Path.Combine(directory, WeightsFile);
        if (!File.Exists(configPath))
        {
            throw new CheckpointException($"{directory}: no {ConfigFile}; expected a PEFT LoRA adapter directory");
        }
        if (!File.Exists(weightsPath))
        {
            throw new CheckpointException(File.Exists(System.IO.Path.Combine(directory, "adapter_model.bin"))
                ? $"{directory}: the adapter's weights are adapter_model.bin (pickle), which is not read; save it with safe_serialization=True (adapter_model.safetensors)"
                : $"{directory}: no {WeightsFile}");
        }
        JsonObject config;
        try
        {
            config = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject ?? throw new CheckpointException($"{configPath}: expected a JSON object");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new CheckpointException($"{configPath}: not valid JSON ({e.Message.Split('.')[0]})", e);
        }
        string? Str(string k) => config[k] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        double Num(string k, double fallback) => config[k] is JsonValue v && v.TryGetValue<double>(out var x) ? x : fallback;
        if (Str("peft_type") is { } type && type != "LORA")
        {
            throw new CheckpointException($"{configPath}: $.peft_type is \"{type}\"; only LORA adapters are read");
        }
        if (config["use_dora"] is JsonValue dora && dora.TryGetValue<bool>(out var isDora) && isDora)
        {
            throw new CheckpointException($"{configPath}: $.use_dora is true; DoRA adapters are not supported");
        }
        if (config["alpha_pattern"] is JsonObject ap && ap.Count > 0)
        {
            throw new CheckpointException($"{configPath}: $.alpha_pattern is not supported (one lora_alpha for every module)");
        }
        var alpha = Num("lora_alpha", 8);
        var adapter = new LoraAdapter(cfg, alpha, Num("lora_dropout", 0), config["use_rslora"] is JsonValue rs && rs.TryGetValue<bool>(out var r) && r);
        var sites = AllSites(cfg).ToDictionary(s => s.Path, StringComparer.Ordinal);
        using var file = SafetensorsFile.Open(weightsPath);
        var pairs = new Dictionary<string, (Tensor? A, Tensor? B)>(StringComparer.Ordinal);
        foreach (var name in file.Entries.Keys.Where(k => k != "__metadata__").Order(StringComparer.Ordinal))
        {
            var m = KeyPattern.Match(name);
            if (!m.Success)
            {
                throw new CheckpointException($"{weightsPath}: tensor \"{name}\" is not a LoRA weight (expected ….lora_A.weight or ….lora_B.weight)");
            }
            var path = m.Groups["path"].Value;
            if (!sites.ContainsKey(path))
            {
                throw new CheckpointException($"{weightsPath}: \"{name}\" targets {path}, which this {cfg.Architecture} model ({cfg.NLayers} layers) has no LoRA site for");
            }
            var t = file.Read(name).to(ScalarType.Float32);
            var entry = pairs.GetValueOrDefault(path);
            pairs[path] = m.Groups["ab"].Value == "A" ? (t, entry.B) : (entry.A, t);
        }
        if (pairs.Count == 0)
        {
            throw new CheckpointException($"{weightsPath}: no LoRA weights");
        }
        foreach (var (path, (a, b)) in pairs)
        {
            var site = sites[path];
            if (a is null || b is null)
            {
                throw new CheckpointException($"{weightsPath}: {path} has lora_{(a is null ? "A" : "B")} missing");
            }
            var rank = a.shape[0];
            if (a.dim() != 2 || b.dim() != 2 || a.shape[1] != site.In || b.shape[0] != site.Out || b.shape[1] != rank)
            {
                throw new CheckpointException($"{weightsPath}: {path}: lora_A is [{string.Join(", ", a.shape)}] and lora_B [{string.Join(", ", b.shape)}]; this model needs [r, {site.In}] and [{site.Out}, r]");
            }
            adapter.Add(site, device is null ? a : a.to(device), device is null ? b : b.to(device), (int)rank);
        }
        adapter._pairs.Sort((x, y) => string.CompareOrdinal(x.Site.Path, y.Site.Path));
        return adapter;
    }
}
