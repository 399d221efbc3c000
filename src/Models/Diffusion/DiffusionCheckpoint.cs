using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Diffusion;

/// <summary>
/// Reads and writes one diffusers component's weights (<c>diffusion_pytorch_model[.fp16].safetensors</c>,
/// <c>model[.fp16].safetensors</c>, or a sharded <c>.safetensors.index.json</c>) into a module, strictly: every
/// parameter present with its shape, nothing unexpected; F16/BF16/F64 upcast to F32. Errors name the file and tensor.
/// </summary>
public static class DiffusionCheckpoint
{
    /// <summary>The weights file of a component folder: the plain file, else the fp16 variant, else a sharded index.</summary>
    public static string[] WeightFiles(string dir, string stem)
    {
        foreach (var name in new[] { stem + ".safetensors", stem + ".fp16.safetensors" })
        {
            var path = Path.Combine(dir, name);
            if (Common.SafeFiles.IsRegularFile(path))
            {
                return [path];
            }
        }
        foreach (var name in new[] { stem + ".safetensors.index.json", stem + ".safetensors.index.fp16.json", stem + ".fp16.safetensors.index.json" })
        {
            var index = Path.Combine(dir, name);
            if (Common.SafeFiles.IsRegularFile(index))
            {
                JsonObject? map;
                try
                {
                    map = (JsonNode.Parse(File.ReadAllText(index)) as JsonObject)?["weight_map"] as JsonObject;
                }
                catch (System.Text.Json.JsonException)
                {
                    map = null;
                }
                if (map is null)
                {
                    throw new CheckpointException($"{index}: expected a JSON object with a \"weight_map\" of tensor → file");
                }
                var files = map.Select(kv => kv.Value?.ToString() ?? "").Distinct().ToArray();
                if (files.Any(f => f.Length == 0 || f.Contains('/') || f.Contains('\\') || f.StartsWith('.')))
                {
                    throw new CheckpointException($"{index}: $.weight_map: expected plain file names in the same folder");
                }
                return files.Select(f => Path.Combine(dir, f)).ToArray();
            }
        }
        if (File.Exists(Path.Combine(dir, stem + ".bin")) || File.Exists(Path.Combine(dir, "pytorch_model.bin")))
        {
            throw new CheckpointException($"{dir}: holds only a PyTorch pickle (.bin); legacy pickles are not supported: convert it to safetensors");
        }
        throw new CheckpointException($"{dir}: no {stem}.safetensors (nor its .fp16 variant or a sharded index)");
    }

    /// <summary>Loads the files into the module's parameters; <paramref name="rename"/> maps a file key to the module's name (null: skip it).</summary>
    public static void Load(nn.Module module, string[] files, Func<string, string?>? rename = null)
    {
        var opened = new List<SafetensorsFile>();
        try
        {
            var where = new Dictionary<string, (SafetensorsFile File, string Key)>(StringComparer.Ordinal);
            foreach (var f in files)
            {
                var st = SafetensorsFile.Open(f);
                opened.Add(st);
                foreach (var key in st.Entries.Keys)
                {
                    var name = rename is null ? key : rename(key);
                    if (name is not null)
                    {
                        where[name] = (st, key);
                    }
                }
            }
            var parameters = module.named_parameters().ToList();
            var missing = parameters.Where(p => !where.ContainsKey(p.name)).Select(p => p.name).ToList();
            if (missing.Count > 0)
            {
                throw new CheckpointException($"{files[0]}: missing tensor \"{missing[0]}\" (shape [{string.Join(", ", parameters.First(p => p.name == missing[0]).parameter.shape)}])" +
                    (missing.Count > 1 ? $" and {missing.Count - 1} more" : "") + "; the config and the weights disagree");
            }
            var known = parameters.Select(p => p.name).ToHashSet(StringComparer.Ordinal);
            if (where.Keys.FirstOrDefault(k => !known.Contains(k)) is { } extra)
            {
                throw new CheckpointException($"{where[extra].File.Path}: unexpected tensor \"{where[extra].Key}\": no such parameter in a model built from this config");
            }
            using var noGrad = no_grad();
            foreach (var (name, p) in parameters)
            {
                var (st, key) = where[name];
                var entry = st.Entries[key];
                var shape = entry.Shape;
                if (!shape.SequenceEqual(p.shape))
                {
                    var squeezable = shape.Length == 4 && shape[2] == 1 && shape[3] == 1 && p.shape.Length == 2 && shape[0] == p.shape[0] && shape[1] == p.shape[1];
                    if (!squeezable)
                    {
                        throw new CheckpointException($"{st.Path}: tensor \"{key}\" has shape [{string.Join(", ", shape)}], expected [{string.Join(", ", p.shape)}]");
                    }
                }
                if (entry.DType is not ("F32" or "F16" or "BF16" or "F64"))
                {
                    throw new CheckpointException($"{st.Path}: tensor \"{key}\" is {entry.DType}; expected a floating-point tensor");
                }
                using var t = st.Read(key);
                using var f32 = t.to(ScalarType.Float32);
                if (!f32.isfinite().all().item<bool>())
                {
                    throw new CheckpointException($"{st.Path}: tensor \"{key}\" holds NaN or infinite values");
                }
                p.copy_(f32.reshape(p.shape));
            }
        }
        finally
        {
            foreach (var st in opened)
            {
                st.Dispose();
            }
        }
    }

    /// <summary>Writes a module's parameters (F32, or F16 for the fp16 variant).</summary>
    public static void Save(nn.Module module, string path, bool fp16 = false)
    {
        using var scope = NewDisposeScope();
        var tensors = module.named_parameters().Select(p => (p.name, fp16 ? p.parameter.detach().to(ScalarType.Float16) : p.parameter.detach())).ToList();
        SafetensorsFile.Write(path, tensors);
    }

    /// <summary>The VAE's legacy attention names (query/key/value/proj_attn), renamed as diffusers does on load.</summary>
    public static string? RenameVae(string key) => key
        .Replace(".query.", ".to_q.", StringComparison.Ordinal)
        .Replace(".key.", ".to_k.", StringComparison.Ordinal)
        .Replace(".value.", ".to_v.", StringComparison.Ordinal)
        .Replace(".proj_attn.", ".to_out.0.", StringComparison.Ordinal);

    /// <summary>Older text encoders store position_ids, now a non-persistent buffer: skipped.</summary>
    public static string? RenameText(string key) => key.EndsWith("position_ids", StringComparison.Ordinal) ? null : key;
}
