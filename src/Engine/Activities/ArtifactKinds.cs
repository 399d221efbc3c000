namespace Pipelines.Engine.Activities;

/// <summary>The kinds of artifacts that flow between steps; ports connect only where kinds match.</summary>
public static class ArtifactKinds
{
    public const string Dataset = "Dataset";
    public const string Report = "Report";
    public const string Json = "Json";
    public const string Model = "Model";
    public const string Schema = "Schema";
    public const string Scores = "Scores";
    public const string Circuit = "Circuit";
    public const string Plot = "Plot";
    public const string Topics = "Topics";

    /// <summary>A directory of checkpoints (step-NNNNNN folders): not a Model, so it never stands in for one.</summary>
    public const string Checkpoints = "Checkpoints";

    /// <summary>An erasure probe battery's matrix (pipelines.erasure-matrix/1): methods × probes with a classification.</summary>
    public const string ErasureMatrix = "ErasureMatrix";

    /// <summary>An activation-patching sweep (pipelines.patching-grid/1): normalised and raw metric per layer × position.</summary>
    public const string PatchingGrid = "PatchingGrid";

    /// <summary>Linear probes per layer × position with control-task selectivity (pipelines.probe-results/1).</summary>
    public const string ProbeResults = "ProbeResults";

    /// <summary>A steering vector per layer (safetensors + manifest).</summary>
    public const string SteeringVector = "SteeringVector";

    /// <summary>A featurizer for interchange interventions (featurizer.json + featurizer.safetensors; research/causal.md §7).</summary>
    public const string Featurizer = "Featurizer";

    /// <summary>Interchange intervention accuracy per unit, in MIB's JSON layout.</summary>
    public const string IIAResults = "IIAResults";

    /// <summary>A diffusers pipeline folder (model_index.json, unet/, text_encoder/, tokenizer/, scheduler/, optional vae/).</summary>
    public const string DiffusionModel = "DiffusionModel";

    /// <summary>Generated images with their prompts, seeds, scorer outputs and cost (pipelines.images/1).</summary>
    public const string Images = "Images";

    /// <summary>The toy world's scorer CNN (stands in for ResNet-50 and CLIP in diffusion metrics).</summary>
    public const string Scorer = "Scorer";

    /// <summary>Every known kind, for the JSON Schema and the designer's colours.</summary>
    public static readonly IReadOnlyList<string> All = [Dataset, Report, Json, Model, Schema, Scores, Circuit, Plot, Topics, Checkpoints, ErasureMatrix, PatchingGrid, ProbeResults, SteeringVector, Featurizer, IIAResults, DiffusionModel, Images, Scorer];
}

/// <summary>An artifact handed to an activity: an immutable object in the store.</summary>
/// <param name="Digest">SHA-256 of the content (hex); for directories, of their file manifest.</param>
/// <param name="Kind">Artifact kind.</param>
/// <param name="Path">Where to read it; never write there.</param>
public sealed record Artifact(string Digest, string Kind, string MediaType, string Path, long Size, bool IsDirectory, string FileName);
