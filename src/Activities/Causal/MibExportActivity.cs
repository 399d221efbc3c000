using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;

namespace Pipelines.Activities.Causal;

/// <summary>
/// Writes a featurizer in MIB's causal-variable submission layout (research/causal.md §2.8): one folder
/// <c>{TASK}_{ModelClass}_{VARIABLE}</c> with, per unit, <c>ResidualStream(Layer-l,Token-p)_featurizer</c>,
/// <c>_inverse_featurizer</c> and <c>_indices</c>. MIB's featurizer files are torch pickles, which .NET does not write;
/// this writes each as safetensors (<c>rotation_matrix</c> [d, k]) beside a converter, <c>convert_to_mib.py</c>, that a
/// user runs once with PyTorch to produce the pickles MIB's evaluate_submission.py loads.
/// </summary>
[Activity("causal.export", Version = 1, Category = "Causal", Summary = "Export a featurizer as an MIB causal-variable-track submission folder (safetensors + a PyTorch converter)")]
[Output("submission", ArtifactKinds.Json, Help = "submission/{TASK}_{ModelClass}_{VARIABLE}/ResidualStream(Layer-l,Token-p)_{featurizer,inverse_featurizer,indices} + convert_to_mib.py", MediaType = "inode/directory", FileName = "submission", IsDirectory = true)]
public sealed class MibExportActivity : Activity<MibExportActivity.Input>
{
    public sealed record Input
    {
        [Input("The featurizer (causal.featurizer)", Kind = ArtifactKinds.Featurizer)]
        public required Artifact Featurizer { get; init; }

        [Input("MIB task id, e.g. 4_answer_MCQA, ARC_easy, arithmetic, ravel_task")]
        public string Task { get; init; } = "4_answer_MCQA";

        [Input("The model's HF class, e.g. GPT2LMHeadModel, Qwen2ForCausalLM, Gemma2ForCausalLM, LlamaForCausalLM")]
        public string ModelClass { get; init; } = "GPT2LMHeadModel";

        [Input("The causal variable's MIB name (default: the featurizer's)")]
        public string? Variable { get; init; }
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Task).Matches("^[A-Za-z0-9_]+$").WithMessage("an MIB task id: letters, digits and underscores");
            RuleFor(i => i.ModelClass).Matches("^[A-Za-z0-9_]+$").WithMessage("an HF model class name: letters, digits and underscores");
            RuleFor(i => i.Variable).Matches("^[A-Za-z0-9_]+$").When(i => i.Variable is not null).WithMessage("a variable name: letters, digits and underscores");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var featurizer = Causal.Featurizer.Read(input.Featurizer.Path, "inputs.featurizer");
        var variable = input.Variable ?? featurizer.Variable ?? throw new ActivityException("inputs.variable: the featurizer names no variable; give MIB's variable name");
        if (!System.Text.RegularExpressions.Regex.IsMatch(variable, "^[A-Za-z0-9_]+$"))
        {
            throw new ActivityException($"inputs.variable: \"{variable}\" is not an MIB variable name (letters, digits, underscores)");
        }
        if (featurizer.Hook != "resid_post")
        {
            context.Log($"warning: MIB's ResidualStream units are block outputs (resid_post); this featurizer acts on {featurizer.Hook}");
        }
        var root = context.OutputDirectory("submission");
        var folder = Directory.CreateDirectory(Path.Combine(root, $"{input.Task}_{input.ModelClass}_{variable}")).FullName;
        foreach (var unit in featurizer.Units)
        {
            var name = $"ResidualStream(Layer-{unit.Layer},Token-{unit.Position})";
            var meta = new Dictionary<string, string>
            {
                ["featurizer_class"] = unit.W is null ? "Featurizer" : "SubspaceFeaturizer",
                ["n_features"] = $"{unit.K}",
                ["kind"] = featurizer.Kind.ToString().ToLowerInvariant(),
            };
            if (unit.W is not null)
            {
                SafetensorsFile.Write(Path.Combine(folder, name + "_featurizer.safetensors"), [("rotation_matrix", unit.W)], meta);
                SafetensorsFile.Write(Path.Combine(folder, name + "_inverse_featurizer.safetensors"), [("rotation_matrix", unit.W)], meta);
            }
            var indices = unit.Indices is null ? "null" : new JsonArray(unit.Indices.Select(i => (JsonNode?)i).ToArray()).ToJsonString();
            File.WriteAllText(Path.Combine(folder, name + "_indices"), indices);
        }
        File.WriteAllText(Path.Combine(root, "convert_to_mib.py"), Converter);
        context.Log($"{featurizer.Units.Count} units of {variable} in {Path.GetFileName(folder)}; run `python convert_to_mib.py` in the folder with PyTorch to write MIB's pickles");
        return Task.CompletedTask;
    }

    private const string Converter = """
        # Converts this submission's safetensors featurizers into the torch.save files MIB's
        # evaluate_submission.py loads (research: MIB-causal-variable-track README, neural/featurizers.py).
        # Run once, with PyTorch and safetensors installed:  python convert_to_mib.py
        # The dict layout follows MIB's SubspaceFeaturizer (model_info + state_dict with rotation_matrix);
        # check it against your MIB checkout before submitting.
        import glob, os
        import torch
        from safetensors.torch import load_file
        from safetensors import safe_open

        here = os.path.dirname(os.path.abspath(__file__))
        for path in glob.glob(os.path.join(here, "*", "*_featurizer.safetensors")):
            with safe_open(path, "pt") as f:
                meta = f.metadata() or {}
            w = load_file(path)["rotation_matrix"]
            inverse = path.endswith("_inverse_featurizer.safetensors")
            info = {
                "featurizer_class": "SubspaceFeaturizerModule",
                "inverse_featurizer_class": "SubspaceInverseFeaturizerModule",
                "n_features": int(meta.get("n_features", w.shape[1])),
                "additional_config": {"rotation_matrix": w, "requires_grad": False},
            }
            torch.save({"model_info": info, "state_dict": {"rotate.weight": w}}, path[: -len(".safetensors")])
            print("wrote", path[: -len(".safetensors")], "inverse" if inverse else "")
        """;
}
