using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;

namespace Pipelines.Activities.Model;

/// <summary>
/// The dtype a step runs its model's forward and backward passes in. bf16 runs the matrix products on the CPU's bf16
/// instructions (where it has them) or the GPU's tensor cores; norms and softmax still compute in float32, and
/// attribution accumulates its scores in float32.
/// </summary>
public enum ComputeDtype
{
    Float32,
    Bf16,
}

/// <summary>Opening Model artifacts (HF checkpoint directories in the store) with clear errors.</summary>
public static class ModelArtifacts
{
    /// <summary>The files that make a checkpoint; everything else in a directory is left out of the artifact.</summary>
    public static readonly string[] CheckpointFiles =
    [
        "config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json",
        "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
    ];

    public static (HookedTransformer Model, ITextTokenizer Tokenizer) Open(Artifact model, ComputeDtype dtype = ComputeDtype.Float32)
    {
        try
        {
            var device = Pipelines.Models.Runtime.TorchRuntime.ComputeDevice;
            var loaded = Checkpoint.Load(model.Path, new LoadOptions
            {
                Device = device.type == TorchSharp.DeviceType.CPU ? null : device,
                DType = dtype == ComputeDtype.Bf16 ? TorchSharp.torch.ScalarType.BFloat16 : TorchSharp.torch.ScalarType.Float32,
            });
            ITextTokenizer? tokenizer;
            try
            {
                tokenizer = TokenizerLoader.FromDirectory(model.Path, loaded.Config.BosTokenId, loaded.Config.EosTokenId, loaded.Config.PadTokenId)
                    ?? TokenizerLoader.Gpt2ReferenceFor(loaded.Config);
            }
            catch
            {
                loaded.Dispose();
                throw;
            }
            if (tokenizer is null)
            {
                loaded.Dispose();
                throw new ActivityException(loaded.Config.Architecture == "gpt2"
                    ? $"the model has no tokenizer.json or tokenizer.model, and its vocabulary ({loaded.Config.DVocab:N0}) is not GPT-2's ({TokenizerLoader.Gpt2VocabularySize:N0}); save its tokenizer beside config.json"
                    : "the model has no tokenizer.json or tokenizer.model");
            }
            return (loaded, tokenizer);
        }
        catch (CheckpointException e)
        {
            throw new ActivityException(e.Message, e);
        }
    }

    /// <summary>A checkpoint whose config and weights are all there (the safetensors header matches the file's size).</summary>
    public static bool IsComplete(string dir)
    {
        var weights = Path.Combine(dir, "model.safetensors");
        if (!File.Exists(Path.Combine(dir, "config.json")) || !File.Exists(weights))
        {
            return false;
        }
        try
        {
            using var file = SafetensorsFile.Open(weights);
            return true;
        }
        catch (Exception e) when (e is CheckpointException or IOException or System.Text.Json.JsonException or InvalidDataException)
        {
            return false;
        }
    }
}
