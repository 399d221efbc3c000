using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;

namespace Pipelines.Activities.Model;

/// <summary>Turns a HF checkpoint directory on disk into a Model artifact whose digest is the content of its files.</summary>
[Activity("model.load", Version = 4, Category = "Model", Summary = "Load a HF checkpoint directory (config.json + safetensors + tokenizer) as a Model, optionally with a PEFT LoRA adapter merged in and quantized (bf16, int8, int4)")]
[Output("model", ArtifactKinds.Model, Help = "The checkpoint: config.json, safetensors and tokenizer files", MediaType = "inode/directory", FileName = "model", IsDirectory = true)]
public sealed class LoadModelActivity : Activity<LoadModelActivity.Input>
{
    public sealed record Input
    {
        [Input("The checkpoint directory (config.json with model.safetensors or a sharded index)", IsPath = true, PathKind = PathKind.Directory)]
        public required string Path { get; init; }

        [Input("Deploy precision of the linear weights: none, bf16, int8 (per-row absmax, as bitsandbytes' 8-bit loading without outliers) or int4 (absmax per group of 64); stored dequantized, computed in float32")]
        public Pipelines.Models.Transformer.Quantization Quantize { get; init; } = Pipelines.Models.Transformer.Quantization.None;

        [Input("A PEFT LoRA adapter directory for this checkpoint (adapter_config.json + adapter_model.safetensors, e.g. a published ELM or RMU adapter); merged into the weights", IsPath = true, PathKind = PathKind.Directory)]
        public string? Adapter { get; init; }

        [Input("When path is a PEFT adapter directory (adapter_config.json, no config.json): the base checkpoint it is merged into. Lets one workflow parameter take either an erased checkpoint or an adapter", IsPath = true, PathKind = PathKind.Directory)]
        public string? AdapterBase { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (Directory.Exists(input.Path) && File.Exists(System.IO.Path.Combine(input.Path, Pipelines.Models.Adapters.LoraAdapter.ConfigFile))
            && !File.Exists(System.IO.Path.Combine(input.Path, Checkpoint.ConfigFile)))
        {
            if (input.AdapterBase is null)
            {
                throw new ActivityException($"{input.Path}: a PEFT adapter, not a checkpoint; give the base checkpoint as adapterBase (or the base as path and this as adapter)");
            }
            if (input.Adapter is { Length: > 0 })
            {
                throw new ActivityException($"{input.Path}: a PEFT adapter, and adapter is set too; give one adapter");
            }
            input = input with { Path = input.AdapterBase, Adapter = input.Path, AdapterBase = null };
        }
        if (!Directory.Exists(input.Path))
        {
            throw new ActivityException($"{input.Path}: expected a checkpoint directory, found a file");
        }
        // Check the user's directory first, so every error names it (not the store's scratch copy).
        try
        {
            using var check = Checkpoint.OpenWeightsOrThrow(input.Path);
            HfConfig.CheckSizes(HfConfig.Read(System.IO.Path.Combine(input.Path, Checkpoint.ConfigFile)), System.IO.Path.Combine(input.Path, Checkpoint.ConfigFile));
        }
        catch (CheckpointException e)
        {
            throw new ActivityException(e.Message, e);
        }
        var real = Pipelines.Common.SafeFiles.Resolve(System.IO.Path.GetFullPath(input.Path)) ?? input.Path;
        var output = context.OutputDirectory("model");
        var files = ModelArtifacts.CheckpointFiles.Select(f => System.IO.Path.Combine(input.Path, f)).Where(File.Exists).ToList();
        var index = System.IO.Path.Combine(input.Path, Checkpoint.IndexFile);
        if (File.Exists(index))
        {
            using var weights = Checkpoint.OpenWeightsOrThrow(input.Path);
            files.AddRange(Directory.GetFiles(input.Path, "*.safetensors"));
        }
        foreach (var file in files.Distinct())
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            if (!Pipelines.Common.SafeFiles.IsRegularFile(file))
            {
                throw new ActivityException($"{input.Path}: {System.IO.Path.GetFileName(file)} is not a regular file (a FIFO, socket or device)");
            }
            if (Pipelines.Common.SafeFiles.Resolve(System.IO.Path.GetFullPath(file)) is not { } target || !target.StartsWith(real + "/", StringComparison.Ordinal))
            {
                throw new ActivityException($"{input.Path}: {System.IO.Path.GetFileName(file)} is a link out of the checkpoint directory; copy the file in instead");
            }
            File.Copy(file, System.IO.Path.Combine(output, System.IO.Path.GetFileName(file)));
        }
        // Check it opens (config, every tensor, tokenizer) before it becomes an artifact.
        var (model, tokenizer) = ModelArtifacts.Open(new Artifact("", ArtifactKinds.Model, "inode/directory", output, 0, true, "model"));
        using (model)
        {
            if (input.Adapter is { Length: > 0 } adapterDir)
            {
                Merged(model, output, adapterDir, context);
            }
            if (input.Quantize != Pipelines.Models.Transformer.Quantization.None)
            {
                Quantized(model, output, input.Quantize);
            }
            context.Log($"{model.Config.Architecture}: {model.Config.NLayers} layers, d_model {model.Config.DModel}, {model.Config.ParameterCount():N0} parameters, tokenizer {tokenizer.Kind}");
        }
        return Task.CompletedTask;
    }

    /// <summary>Merges a PEFT LoRA adapter into the model and rewrites the artifact's weights (one model.safetensors), marked in config.json.</summary>
    private static void Merged(Pipelines.Models.Transformer.HookedTransformer model, string output, string adapterDir, ActivityContext context)
    {
        Pipelines.Models.Adapters.LoraAdapter adapter;
        try
        {
            adapter = Pipelines.Models.Adapters.LoraAdapter.Load(adapterDir, model.Config, model.W_E.device);
        }
        catch (CheckpointException e)
        {
            throw new ActivityException(e.Message, e);
        }
        using (adapter)
        {
            adapter.Attach(model);
            adapter.Merge();
            context.Log($"merged a LoRA adapter: {adapter.Sites.Count} modules in {adapter.Sites.Select(s => s.Layer).Distinct().Count()} layers, alpha {adapter.Alpha}");
            RewriteWeights(model, output, new System.Text.Json.Nodes.JsonObject
            {
                ["pipelines_adapter"] = new System.Text.Json.Nodes.JsonObject
                {
                    ["format"] = "peft-lora",
                    ["modules"] = adapter.Sites.Count,
                    ["alpha"] = adapter.Alpha,
                },
            });
        }
    }

    private static void RewriteWeights(Pipelines.Models.Transformer.HookedTransformer model, string output, System.Text.Json.Nodes.JsonObject extra)
    {
        foreach (var shard in Directory.GetFiles(output, "*.safetensors").Append(System.IO.Path.Combine(output, Checkpoint.IndexFile)).Where(File.Exists))
        {
            File.Delete(shard);
        }
        Checkpoint.Save(model, output, extra);
    }

    /// <summary>Rewrites the artifact's weights at the deployed precision (one model.safetensors), marked in config.json.</summary>
    private static void Quantized(Pipelines.Models.Transformer.HookedTransformer model, string output, Pipelines.Models.Transformer.Quantization q)
    {
        Pipelines.Models.Transformer.WeightQuantization.Apply(model, q);
        RewriteWeights(model, output, new System.Text.Json.Nodes.JsonObject
        {
            ["pipelines_quantization"] = System.Text.Json.JsonNamingPolicy.KebabCaseLower.ConvertName(q.ToString()),
        });
    }
}
