using Pipelines.Models.Adapters;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Pipelines.Models.Diffusion;

/// <summary>
/// LoRA on a UNet's linear and conv layers with a runtime <see cref="Multiplier"/> (Concept Sliders' scale): per
/// target module <c>down</c> [r, in(, k, k)] and <c>up</c> [out, r(, 1, 1)], added as multiplier·(alpha/r)·up(down(x)).
/// Its own state dict in kohya's names (<c>lora_unet_&lt;path with _&gt;.lora_down.weight</c>, <c>.lora_up.weight</c>,
/// <c>.alpha</c>), so the UNet's weights stay untouched and several adapters can be attached at once. The init and
/// scaling are the language-model adapters' (<see cref="LoraMath"/>).
/// </summary>
public sealed class UNetLora : nn.Module
{
    /// <summary>Target presets: the Concept Sliders / SliderSpace / ESD names of research diffusion.md §3.4 and §8.</summary>
    public static readonly IReadOnlyDictionary<string, string> Presets = new Dictionary<string, string>
    {
        ["attn1"] = "self-attention q, k, v, out (Concept Sliders' noxattn, its default)",
        ["attn2"] = "cross-attention q, k, v, out (xattn)",
        ["attn2-qkv"] = "cross-attention q, k, v (Concept Sliders' xattn-strict)",
        ["attn2-kv"] = "cross-attention k, v (SliderSpace's xattn-strict)",
        ["attn"] = "both attentions' q, k, v, out (full)",
        ["linear"] = "every linear layer",
        ["all"] = "every linear and conv layer",
    };

    private readonly List<(string Path, nn.Module Layer, Parameter Down, Parameter Up, LoraSlot Slot)> _pairs = [];
    private bool _attached;

    public int Rank { get; }
    public double Alpha { get; }
    public string Target { get; }

    /// <summary>The slider value: 0 leaves the model unchanged, 1 as trained, negative reverses.</summary>
    public double Multiplier { get; set; } = 1.0;

    public IReadOnlyList<string> Paths => _pairs.Select(p => p.Path).ToList();

    private UNetLora(int rank, double alpha, string target) : base("unet_lora")
    {
        Rank = rank;
        Alpha = alpha;
        Target = target;
    }

    /// <summary>The UNet's layers a preset selects, by module path.</summary>
    public static IReadOnlyList<(string Path, nn.Module Layer)> Select(UNet2DConditionModel unet, string target)
    {
        if (!Presets.ContainsKey(target))
        {
            throw new ArgumentException($"unknown LoRA target \"{target}\" (expected one of {string.Join(", ", Presets.Keys)})");
        }
        bool Attn(string path, string attn, string[] parts) => path.Contains($".{attn}.", StringComparison.Ordinal) && parts.Any(p => path.EndsWith($".{attn}.{p}", StringComparison.Ordinal));
        string[] qkvo = ["to_q", "to_k", "to_v", "to_out.0"];
        return unet.named_modules().Where(m => m.module is DLinear or DConv2d).Where(m => target switch
        {
            "attn1" => Attn(m.name, "attn1", qkvo),
            "attn2" => Attn(m.name, "attn2", qkvo),
            "attn2-qkv" => Attn(m.name, "attn2", ["to_q", "to_k", "to_v"]),
            "attn2-kv" => Attn(m.name, "attn2", ["to_k", "to_v"]),
            "attn" => Attn(m.name, "attn1", qkvo) || Attn(m.name, "attn2", qkvo),
            "linear" => m.module is DLinear,
            _ => true,
        }).Select(m => (m.name, m.module)).ToList();
    }

    /// <summary>
    /// A new adapter: down Kaiming-uniform (a = 1, kohya), up zero, so it starts as the base model; with
    /// <paramref name="frozenOrthogonalUp"/> (SliderSpace) up is a random unit column, frozen, and only down learns.
    /// </summary>
    public static UNetLora Create(UNet2DConditionModel unet, string target, int rank = 4, double alpha = 1.0, long seed = 0, bool frozenOrthogonalUp = false)
    {
        if (rank < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(rank), "a LoRA rank is at least 1");
        }
        var lora = new UNetLora(rank, alpha, target);
        using var generator = new Generator((ulong)seed);
        foreach (var (path, layer) in Select(unet, target))
        {
            var (inF, outF, k) = layer is DLinear l ? (l.In, l.Out, 0L) : (((DConv2d)layer).In, ((DConv2d)layer).Out, ((DConv2d)layer).Kernel);
            var downShape = k == 0 ? new[] { (long)rank, inF } : [rank, inF, k, k];
            var down = LoraMath.KaimingDown(downShape, inF * Math.Max(k * k, 1), 1.0, generator);
            Tensor up;
            if (frozenOrthogonalUp)
            {
                var q = linalg.qr(randn([outF, rank], generator: generator), linalg.QRMode.Reduced).Q;
                up = q;
            }
            else
            {
                up = zeros(outF, rank);
            }
            if (k != 0)
            {
                up = up.view(outF, rank, 1, 1);
            }
            lora.Add(path, layer, down, up, !frozenOrthogonalUp);
        }
        return lora;
    }

    private void Add(string path, nn.Module layer, Tensor down, Tensor up, bool upTrainable)
    {
        var key = "lora_unet_" + path.Replace('.', '_');
        var pd = new Parameter(down, requires_grad: true);
        var pu = new Parameter(up, requires_grad: upTrainable);
        register_parameter(key + "_lora_down", pd);
        register_parameter(key + "_lora_up", pu);
        var slot = new LoraSlot(pd, pu, LoraMath.Scaling(Alpha, Rank), () => Multiplier);
        _pairs.Add((path, layer, pd, pu, slot));
    }

    /// <summary>The parameters an optimiser should train (down and, unless frozen, up).</summary>
    public IEnumerable<Parameter> Trainable() => _pairs.SelectMany(p => new[] { p.Down, p.Up }).Where(p => p.requires_grad);

    /// <summary>Adds the update to the UNet's layers at each forward; dispose the result (or call <see cref="Detach"/>) to remove it.</summary>
    public IDisposable Attach()
    {
        if (!_attached)
        {
            foreach (var p in _pairs)
            {
                Slots(p.Layer).Add(p.Slot);
            }
            _attached = true;
        }
        return new Detacher(this);
    }

    public void Detach()
    {
        if (_attached)
        {
            foreach (var p in _pairs)
            {
                Slots(p.Layer).Remove(p.Slot);
            }
            _attached = false;
        }
    }

    private static List<LoraSlot> Slots(nn.Module layer) => layer is DLinear l ? l.Lora : ((DConv2d)layer).Lora;

    /// <summary>Folds multiplier·scale·up·down into the UNet's weights (no grad), for export or faster sampling.</summary>
    public void MergeInto()
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var scale = Multiplier * LoraMath.Scaling(Alpha, Rank);
        foreach (var (_, layer, down, up, _) in _pairs)
        {
            if (layer is DLinear l)
            {
                l.weight.PlusInPlace(matmul(up, down).mul(Scalars.Of(scale)));
            }
            else
            {
                var c = (DConv2d)layer;
                var delta = matmul(up.flatten(1), down.flatten(1)).view(c.weight.shape);
                c.weight.PlusInPlace(delta.mul(Scalars.Of(scale)));
            }
        }
    }

    /// <summary>Writes kohya's layout: lora_down/lora_up weights and a per-module alpha, metadata naming rank and target.</summary>
    public void Save(string path)
    {
        using var scope = NewDisposeScope();
        var tensors = new List<(string, Tensor)>();
        foreach (var (p, _, down, up, _) in _pairs)
        {
            var key = "lora_unet_" + p.Replace('.', '_');
            tensors.Add((key + ".lora_down.weight", down.detach()));
            tensors.Add((key + ".lora_up.weight", up.detach()));
            tensors.Add((key + ".alpha", tensor((float)Alpha)));
        }
        SafetensorsFile.Write(path, tensors, new Dictionary<string, string> { ["rank"] = Rank.ToString(System.Globalization.CultureInfo.InvariantCulture), ["target"] = Target, ["format"] = "pt" });
    }

    /// <summary>Reads an adapter saved by <see cref="Save"/> (or kohya's trainer) for this UNet; every key must name one of its layers.</summary>
    public static UNetLora Load(UNet2DConditionModel unet, string path)
    {
        using var file = SafetensorsFile.Open(path);
        var byKey = unet.named_modules().Where(m => m.module is DLinear or DConv2d).ToDictionary(m => "lora_unet_" + m.name.Replace('.', '_'), m => (m.name, m.module));
        var downs = file.Entries.Keys.Where(k => k.EndsWith(".lora_down.weight", StringComparison.Ordinal)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (downs.Count == 0)
        {
            throw new CheckpointException($"{path}: no \"*.lora_down.weight\" tensors; expected a kohya-format UNet LoRA");
        }
        var rank = (int)file.Entries[downs[0]].Shape[0];
        var alphaKey = downs[0].Replace(".lora_down.weight", ".alpha");
        double alpha = rank;
        if (file.Entries.ContainsKey(alphaKey))
        {
            using var a = file.Read(alphaKey).to(ScalarType.Float32);
            alpha = a.item<float>();
        }
        var target = file.Metadata?["target"]?.ToString() ?? "custom";
        var lora = new UNetLora(rank, alpha, target);
        foreach (var downKey in downs)
        {
            var module = downKey[..^".lora_down.weight".Length];
            if (!byKey.TryGetValue(module, out var layer))
            {
                throw new CheckpointException($"{path}: tensor \"{downKey}\" names no linear or conv layer of this UNet");
            }
            var upKey = module + ".lora_up.weight";
            if (!file.Entries.ContainsKey(upKey))
            {
                throw new CheckpointException($"{path}: \"{downKey}\" has no matching \"{upKey}\"");
            }
            var down = file.Read(downKey).to(ScalarType.Float32);
            var up = file.Read(upKey).to(ScalarType.Float32);
            var (inF, outF) = layer.module is DLinear l ? (l.In, l.Out) : (((DConv2d)layer.module).In, ((DConv2d)layer.module).Out);
            if (down.shape[0] != rank || down.shape[1] != inF || up.shape[0] != outF || up.shape[1] != rank)
            {
                throw new CheckpointException($"{path}: \"{module}\" has down [{string.Join(", ", down.shape)}] and up [{string.Join(", ", up.shape)}]; expected rank {rank} between {inF} and {outF} features");
            }
            lora.Add(layer.name, layer.module, down, up, true);
        }
        return lora;
    }

    protected override void Dispose(bool disposing)
    {
        Detach();
        base.Dispose(disposing);
    }

    private sealed class Detacher(UNetLora lora) : IDisposable
    {
        public void Dispose() => lora.Detach();
    }
}
