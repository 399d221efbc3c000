using System.Text.Json.Nodes;
using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Checkpoints;

/// <summary>How to load a checkpoint.</summary>
public sealed record LoadOptions
{
    /// <summary>Compute dtype: float32 (default; F16/BF16 weights are upcast) or bfloat16.</summary>
    public ScalarType DType { get; init; } = ScalarType.Float32;
    public Device? Device { get; init; }
}

/// <summary>Loads and saves HF checkpoint directories (config.json + model.safetensors or a sharded index).</summary>
public static class Checkpoint
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = "model.safetensors";
    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>Reads a checkpoint directory into a model in TransformerLens layout.</summary>
    public static HookedTransformer Load(string directory, LoadOptions? options = null)
    {
        TorchRuntime.EnsureLoaded();
        options ??= new LoadOptions();
        if (!Common.SafeFiles.IsDirectory(directory))
        {
            throw new CheckpointException(File.Exists(directory) || Common.SafeFiles.IsSpecial(directory)
                ? $"{directory}: is a file; expected a HF checkpoint directory (config.json + model.safetensors)"
                : $"{directory}: no such directory");
        }
        var configPath = Path.Combine(directory, ConfigFile);
        if (!File.Exists(configPath))
        {
            throw new CheckpointException($"{directory}: no {ConfigFile}; expected a HF checkpoint directory (config.json + model.safetensors)");
        }
        var config = HfConfig.Read(configPath);
        HfConfig.CheckSizes(config, configPath);
        using var files = OpenWeights(directory);
        var model = new HookedTransformer(config); // outside the scope: its parameters outlive this call
        using var scope = NewDisposeScope();
        var lens = HfWeights.ToLens(config, files.Read, files.Has);
        using (no_grad())
        {
            foreach (var (name, param) in model.named_parameters())
            {
                if (!lens.TryGetValue(name, out var value))
                {
                    throw new CheckpointException($"{directory}: the checkpoint gives no tensor for {name}");
                }
                if (!value.shape.SequenceEqual(param.shape))
                {
                    throw new CheckpointException($"{directory}: {name} has shape [{string.Join(",", value.shape)}] but the config implies [{string.Join(",", param.shape)}]");
                }
                param.copy_(value.to(ScalarType.Float32));
            }
            if (options.DType != ScalarType.Float32)
            {
                model.to(options.DType);
            }
            if (options.Device is { } device)
            {
                model.to(device);
            }
        }
        return model;
    }

    /// <summary>Writes config.json and model.safetensors (float32) in HF layout; our toy models are real HF checkpoints.</summary>
    public static void Save(HookedTransformer model, string directory, JsonObject? extraConfig = null)
    {
        Directory.CreateDirectory(directory);
        var config = HfConfig.Write(model.Config);
        foreach (var (k, v) in extraConfig ?? [])
        {
            config[k] = v?.DeepClone();
        }
        File.WriteAllText(Path.Combine(directory, ConfigFile), config.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }) + "\n");
        using var scope = NewDisposeScope();
        var tensors = HfWeights.ToHf(model).Select(t => (t.Name, t.Tensor.to(ScalarType.Float32).cpu())).ToList();
        SafetensorsFile.Write(Path.Combine(directory, WeightsFile), tensors);
    }

    /// <summary>Opens the weights only to check them (every shard present, headers valid).</summary>
    public static WeightSet OpenWeightsOrThrow(string directory) => OpenWeights(directory);

    /// <summary>The weight files of a checkpoint, one or sharded, as one name → tensor source.</summary>
    public static WeightSet OpenWeights(string directory)
    {
        var index = Path.Combine(directory, IndexFile);
        if (File.Exists(index))
        {
            JsonObject map;
            try
            {
                map = JsonNode.Parse(File.ReadAllText(index))!["weight_map"]!.AsObject();
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or NullReferenceException or InvalidOperationException)
            {
                throw new CheckpointException($"{index}: expected a JSON object with a \"weight_map\" of tensor name → shard file", e);
            }
            var shards = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            var byName = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            try
            {
                foreach (var (name, file) in map)
                {
                    var shard = file!.GetValue<string>();
                    if (shard.Contains('/') || shard.Contains(".."))
                    {
                        throw new CheckpointException($"{index}: shard \"{shard}\" must be a file name in the checkpoint directory");
                    }
                    if (!shards.TryGetValue(shard, out var f))
                    {
                        var path = Path.Combine(directory, shard);
                        if (!File.Exists(path))
                        {
                            throw new CheckpointException($"{index}: shard {shard} (holding {name}) is missing");
                        }
                        shards[shard] = f = SafetensorsFile.Open(path);
                    }
                    byName[name] = f;
                }
            }
            catch
            {
                foreach (var f in shards.Values)
                {
                    f.Dispose();
                }
                throw;
            }
            return new WeightSet(directory, byName, shards.Values.ToList());
        }
        var single = Path.Combine(directory, WeightsFile);
        if (!File.Exists(single))
        {
            throw new CheckpointException($"{directory}: no {WeightsFile} or {IndexFile}");
        }
        var file1 = SafetensorsFile.Open(single);
        return new WeightSet(directory, file1.Entries.Keys.ToDictionary(k => k, _ => file1, StringComparer.Ordinal), [file1]);
    }
}

/// <summary>Tensors by name across one or more safetensors files. Stray buffers (old attn.bias masks) are simply never read.</summary>
public sealed class WeightSet(string directory, Dictionary<string, SafetensorsFile> byName, List<SafetensorsFile> files) : IDisposable
{
    public bool Has(string name) => byName.ContainsKey(name);

    public IReadOnlyCollection<string> Names => byName.Keys;

    /// <summary>The stored dtype of a tensor (F32, BF16, ...).</summary>
    public string DType(string name) => byName[name].Entries[name].DType;

    public Tensor Read(string name) => byName.TryGetValue(name, out var file)
        ? file.Read(name)
        : throw new CheckpointException($"{directory}: missing tensor \"{name}\" (looked in {string.Join(", ", files.Select(f => Path.GetFileName(f.Path)))})");

    public void Dispose()
    {
        foreach (var f in files)
        {
            f.Dispose();
        }
    }
}
