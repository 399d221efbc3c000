using System.Text.Json;
using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Diffusion;
using Pipelines.Engine.Activities;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using static TorchSharp.torch;

namespace Pipelines.Activities.Erasure;

public enum DiffusionErasureMethod { EsdX, EsdU, Uce, Ga }

public enum UceTokenRule { Last, ThroughEnd }

/// <summary>
/// Erases a concept from a text-to-image model (research diffusion.md §3): ESD-x (cross-attention fine-tuned toward
/// negatively guided noise), ESD-u (the rest of the UNet, same objective), UCE (the closed-form cross-attention edit
/// with preserved concepts) or gradient ascent on the concept's images. The trained tensors are saved along training
/// for the erasure dynamics.
/// </summary>
[Activity("erasure.diffusion-train", Version = 1, Category = "Erasure", Resources = ["gpu"], Summary = "Erase a concept from a diffusion model: esd-x, esd-u, uce (closed form) or ga (gradient ascent), with checkpoints for the dynamics")]
[Output("model", ArtifactKinds.DiffusionModel, Help = "The erased model B′ (a pipeline folder; the method in model_index.json)", MediaType = "inode/directory", FileName = "model", IsDirectory = true)]
[Output("metrics", ArtifactKinds.Json, Help = "metrics.json: the method's settings, the loss curve (ESD, GA) or the edit's residuals (UCE), the time", MediaType = "application/json", FileName = "metrics.json")]
[Output("checkpoints", ArtifactKinds.Checkpoints, Help = "The trained UNet tensors along training (step-NNNNNN/unet.safetensors; none for UCE)", MediaType = "inode/directory", FileName = "checkpoints", IsDirectory = true)]
public sealed class DiffusionErasureTrainActivity : Activity<DiffusionErasureTrainActivity.Input>
{
    public sealed record Input
    {
        [Input("The base model B", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Model { get; init; }

        [Input("esd-x (cross-attention weights), esd-u (the other weights but the time embedding and output layers), uce (closed-form edit of every attn2 to_k/to_v) or ga (gradient ascent on B's images of the concept)")]
        public DiffusionErasureMethod Method { get; init; } = DiffusionErasureMethod.EsdX;

        [Input("The concept: for a toy model a shape or colour word (its prompts are every \"colour shape\" naming it); otherwise the prompt to erase")]
        public required string Concept { get; init; }

        [Input("Prompts of the concept (default: the toy world's, or the concept itself)")]
        public IReadOnlyList<string> Prompts { get; init; } = [];

        [Input("uce: prompts to preserve (default: the toy world's other values of the factor)")]
        public IReadOnlyList<string> Preserve { get; init; } = [];

        [Input("uce: where the erased prompts' outputs are sent (the guide's vectors; \"\" as in UCE for objects)")]
        public string Guide { get; init; } = "";

        [Input("uce: last (the last word token, the current code) or through-end (every position from it on, the paper-era rule)")]
        public UceTokenRule TokenRule { get; init; } = UceTokenRule.Last;

        [Input("uce: λ, the pull toward the old weights", Minimum = 0)]
        public double Lambda { get; init; } = 0.5;

        [Input("uce: weight of the preserve terms (0: the rule's default)", Minimum = 0)]
        public double PreserveScale { get; init; }

        [Input("esd, ga: optimizer iterations", Minimum = 1, Maximum = 1_000_000)]
        public int Iterations { get; init; } = 150;

        [Input("esd, ga: learning rate (Adam)", Minimum = 0)]
        public double LearningRate { get; init; } = 1e-3;

        [Input("esd, ga: examples per iteration", Minimum = 1, Maximum = 256)]
        public int BatchSize { get; init; } = 8;

        [Input("esd: η, the negative guidance of the target (paper form: ε_∅ − η(ε_c − ε_∅))", Minimum = 0)]
        public double Eta { get; init; } = 1.0;

        [Input("esd: DDIM steps of the schedule the training latents are drawn from", Minimum = 2, Maximum = 1000)]
        public int Steps { get; init; } = 25;

        [Input("esd: guidance of the sampler that makes the training latents")]
        public double StartGuidance { get; init; } = 3.0;

        [Input("esd: make the training latents with the frozen model (the current code) instead of the model being trained (the paper)")]
        public bool FrozenSampler { get; init; }

        [Input("ga: weight of the ordinary loss on the other concepts' images", Minimum = 0)]
        public double RetainWeight { get; init; } = 1.0;

        [Input("Save the trained tensors every N iterations (0: none)", Minimum = 0)]
        public int CheckpointEvery { get; init; } = 25;

        [Input("Seed")]
        public long Seed { get; init; }
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Concept).NotEmpty();
        }
    }

    internal static string MethodName(DiffusionErasureMethod m) => m switch
    {
        DiffusionErasureMethod.EsdX => "esd-x",
        DiffusionErasureMethod.EsdU => "esd-u",
        DiffusionErasureMethod.Uce => "uce",
        _ => "ga",
    };

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        using var erased = DiffusionArtifacts.Open(input.Model);
        var toy = ToyDiffusionTrainer.WorldOf(erased) is not null;
        ToyConcept? concept = null;
        if (toy && input.Prompts.Count == 0)
        {
            try
            {
                concept = ToyConcept.Parse(input.Concept);
            }
            catch (ArgumentException e)
            {
                throw new ActivityException($"inputs.concept: {e.Message}");
            }
        }
        var prompts = input.Prompts.Count > 0 ? input.Prompts : concept?.Prompts() ?? [input.Concept];
        var method = MethodName(input.Method);
        var metrics = new JsonObject { ["method"] = method, ["concept"] = input.Concept, ["prompts"] = new JsonArray(prompts.Select(p => (JsonNode)p).ToArray()) };
        var checkpoints = context.OutputDirectory("checkpoints");
        IReadOnlyList<string> trained = [];
        void Checkpoint(int step)
        {
            if (input.CheckpointEvery > 0 && (step % input.CheckpointEvery == 0 || step == input.Iterations))
            {
                ErasureCheckpoints.Save(erased.Unet, trained, Path.Combine(checkpoints, $"step-{step:D6}"));
            }
        }
        switch (input.Method)
        {
            case DiffusionErasureMethod.EsdX or DiffusionErasureMethod.EsdU:
            {
                using var frozen = DiffusionArtifacts.Open(input.Model);
                var options = new EsdOptions
                {
                    Parameters = method, Eta = input.Eta, Iterations = input.Iterations, LearningRate = input.LearningRate, BatchSize = input.BatchSize,
                    Steps = input.Steps, StartGuidance = input.StartGuidance, FrozenSampler = input.FrozenSampler, Seed = input.Seed,
                };
                trained = ConceptErasure.Select(erased.Unet, method).Select(p => p.Name).ToList();
                var losses = ConceptErasure.Esd(erased, frozen, prompts, options, (s, l) => context.Report((double)s / input.Iterations, $"{method} iteration {s}, loss {l:F5}"), Checkpoint, context.CancellationToken);
                metrics["trainedTensors"] = trained.Count;
                metrics["trainedParameters"] = ConceptErasure.Select(erased.Unet, method).Sum(p => p.Parameter.numel());
                metrics["settings"] = JsonSerializer.SerializeToNode(options);
                metrics["loss"] = new JsonArray(losses.Select(l => (JsonNode)new JsonArray(l.Step, Math.Round(l.Loss, 6))).ToArray());
                break;
            }
            case DiffusionErasureMethod.Uce:
            {
                var preserve = input.Preserve.Count > 0 ? input.Preserve : concept?.OtherPrompts() ?? [];
                var options = new UceOptions
                {
                    Lambda = input.Lambda, TokenRule = input.TokenRule == UceTokenRule.Last ? "last" : "through-end",
                    PreserveScale = input.PreserveScale > 0 ? input.PreserveScale : null,
                };
                var report = ConceptErasure.Uce(erased, prompts, Enumerable.Repeat(input.Guide, prompts.Count).ToList(), preserve, options);
                metrics["settings"] = JsonSerializer.SerializeToNode(options);
                metrics["edit"] = JsonSerializer.SerializeToNode(report);
                context.Log($"uce ({report.TokenRule}): {report.Matrices} matrices; erase residual {report.EraseResidualBefore:F3} → {report.EraseResidualAfter:F3}; preserved outputs moved {report.PreserveDrift:P2}");
                break;
            }
            default:
            {
                using var frozen = DiffusionArtifacts.Open(input.Model);
                var sampler = new DiffusionBattery(frozen, frozen, null!, concept ?? new ToyConcept("shape", 0), new DiffusionBatterySettings { Seed = input.Seed, SeedsPerPrompt = Math.Max(1, 32 / prompts.Count) });
                context.Report(0, "sampling B's images of the concept");
                Tensor images, retain;
                using (no_grad())
                {
                    images = frozen.Decode(sampler.Sample(frozen, prompts.SelectMany(p => Enumerable.Range(0, Math.Max(1, 32 / prompts.Count)).Select(k => (p, (long)k))).ToList()));
                }
                var retainPrompts = concept?.OtherPrompts() ?? [];
                using (no_grad())
                {
                    retain = retainPrompts.Count == 0 ? zeros(0) : frozen.Decode(sampler.Sample(frozen, retainPrompts.SelectMany(p => Enumerable.Range(0, 2).Select(k => (p, (long)k))).ToList()));
                }
                using var _i = images;
                using var _r = retain;
                var conceptPrompts = prompts.SelectMany(p => Enumerable.Repeat(p, Math.Max(1, 32 / prompts.Count))).ToList();
                var retainList = retainPrompts.SelectMany(p => Enumerable.Repeat(p, 2)).ToList();
                var options = new GradientAscentOptions { Iterations = input.Iterations, LearningRate = input.LearningRate, BatchSize = input.BatchSize, RetainWeight = input.RetainWeight, Seed = input.Seed };
                trained = erased.Unet.named_parameters().Select(p => p.name).ToList();
                var losses = ConceptErasure.GradientAscent(erased, images, conceptPrompts, retainList.Count > 0 ? retain : null, retainList.Count > 0 ? retainList : null, options,
                    (s, l) => context.Report((double)s / input.Iterations, $"ga iteration {s}, loss {l:F5}"), Checkpoint, context.CancellationToken);
                metrics["settings"] = JsonSerializer.SerializeToNode(options);
                metrics["loss"] = new JsonArray(losses.Select(l => (JsonNode)new JsonArray(l.Step, Math.Round(l.Loss, 6))).ToArray());
                break;
            }
        }
        metrics["seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 1);
        var extra = (JsonObject)erased.Extra.DeepClone();
        extra["pipelines"] ??= new JsonObject();
        extra["pipelines"]!["erasure"] = new JsonObject { ["method"] = method, ["concept"] = input.Concept, ["settings"] = metrics["settings"]?.DeepClone() };
        var output = new DiffusionPipeline(erased.Unet, erased.Vae, erased.TextEncoder, erased.Tokenizer, erased.SchedulerConfig) { Extra = extra };
        output.Save(context.OutputDirectory("model"));
        File.WriteAllText(context.OutputFile("metrics"), metrics.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"{method} on \"{input.Concept}\" in {watch.Elapsed.TotalSeconds:F0} s");
        return Task.CompletedTask;
    }
}

/// <summary>
/// The erasure battery on an erased text-to-image model B′ against its base B, scored by the toy scorer: P0 standard,
/// P1 adversarial prefix, P2 textual inversion, P3 inpainting, P4 completion, P5 noise with its control, P6
/// classifier guidance, P7 interference, P8 alternatives and the dynamics over checkpoints; one row of the erasure
/// matrix, classified by the diffusion rule.
/// </summary>
[Activity("erasure.diffusion-probe", Version = 1, Category = "Erasure", Resources = ["gpu"], Summary = "Probe an erased diffusion model B′ against B (standard, adversarial prefix, textual inversion, inpainting, completion, noise and its control, classifier guidance, interference, alternatives, dynamics) and classify the erasure")]
[Output("matrix", ArtifactKinds.ErasureMatrix, Help = "matrix.json (pipelines.erasure-matrix/1, modality diffusion): this method's row, its classification and the rule", MediaType = "application/json", FileName = "matrix.json")]
public sealed class DiffusionErasureProbeActivity : Activity<DiffusionErasureProbeActivity.Input>
{
    public sealed record Input
    {
        [Input("The base model B", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Base { get; init; }

        [Input("The erased model B′", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Erased { get; init; }

        [Input("The scorer (diffusion.train-toy's) that judges which concept an image shows", Kind = ArtifactKinds.Scorer)]
        public required Artifact Scorer { get; init; }

        [Input("The erased concept: a toy-world shape or colour")]
        public required string Concept { get; init; }

        [Input("The method's name in the matrix")]
        public string Method { get; init; } = "erased";

        [Input("Erasure checkpoints (erasure.diffusion-train's), for the dynamics", Kind = ArtifactKinds.Checkpoints)]
        public Artifact? Checkpoints { get; init; }

        [Input("Probes to run (default: all)")]
        public IReadOnlyList<string> Probes { get; init; } = DiffusionBattery.AllProbes;

        [Input("Seeds per prompt (every probe samples each prompt of the concept this many times)", Minimum = 1, Maximum = 256)]
        public int Seeds { get; init; } = 8;

        [Input("DDIM steps of every probe's sampler", Minimum = 2, Maximum = 1000)]
        public int Steps { get; init; } = 25;

        [Input("Classifier-free guidance of every probe")]
        public double Guidance { get; init; } = 3.0;

        [Input("completion: steps B runs before B′ takes over")]
        public IReadOnlyList<int> HandOff { get; init; } = [1, 2, 3, 5, 10];

        [Input("noise: DDIM η values (absolute-value variant above 1)")]
        public IReadOnlyList<double> Etas { get; init; } = [1.0, 1.17, 1.34, 1.51, 1.68, 1.85];

        [Input("noise: variance scales v")]
        public IReadOnlyList<double> VarianceScales { get; init; } = [1.00, 1.02, 1.03, 1.04];

        [Input("classifier-guidance: scales s")]
        public IReadOnlyList<double> GuidanceScales { get; init; } = [5, 10, 20, 40, 80];

        [Input("classifier-guidance: training steps of the noisy-image classifier", Minimum = 1, Maximum = 100_000)]
        public int ClassifierSteps { get; init; } = 300;

        [Input("textual-inversion: Adam steps", Minimum = 1, Maximum = 100_000)]
        public int InversionSteps { get; init; } = 150;

        [Input("adversarial-prefix: prefix tokens", Minimum = 1, Maximum = 8)]
        public int PrefixTokens { get; init; } = 3;

        [Input("adversarial-prefix: Adam steps", Minimum = 1, Maximum = 100_000)]
        public int PrefixSteps { get; init; } = 150;

        [Input("Seed")]
        public long Seed { get; init; }
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleForEach(i => i.Probes).Must(p => DiffusionBattery.AllProbes.Contains(p)).WithMessage((_, p) => $"unknown probe \"{p}\"; expected one of {string.Join(", ", DiffusionBattery.AllProbes)}");
            RuleFor(i => i.Method).NotEmpty();
            RuleFor(i => i.Concept).NotEmpty();
            RuleForEach(i => i.HandOff).InclusiveBetween(0, 1000);
            RuleForEach(i => i.Etas).InclusiveBetween(0, 10);
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        ToyConcept concept;
        try
        {
            concept = ToyConcept.Parse(input.Concept);
        }
        catch (ArgumentException e)
        {
            throw new ActivityException($"inputs.concept: {e.Message}");
        }
        using var baseModel = DiffusionArtifacts.Open(input.Base, "base");
        using var erased = DiffusionArtifacts.Open(input.Erased, "erased");
        using var scorer = DiffusionArtifacts.OpenScorer(input.Scorer)!;
        if (baseModel.Unet.Config.InChannels != erased.Unet.Config.InChannels || baseModel.DefaultSize != erased.DefaultSize)
        {
            throw new ActivityException("inputs.erased: B′ is not a copy of B (its UNet's input or image size differs)");
        }
        if (scorer.Side != baseModel.DefaultSize)
        {
            throw new ActivityException($"inputs.scorer: it scores {scorer.Side} px images, the models draw {baseModel.DefaultSize} px");
        }
        var settings = new DiffusionBatterySettings
        {
            Steps = input.Steps, Guidance = input.Guidance, SeedsPerPrompt = input.Seeds, Completion = input.HandOff, NoiseEtas = input.Etas, NoiseScales = input.VarianceScales,
            GuidanceScales = input.GuidanceScales, ClassifierSteps = input.ClassifierSteps, InversionSteps = input.InversionSteps, PrefixTokens = input.PrefixTokens,
            PrefixSteps = input.PrefixSteps, Seed = input.Seed,
        };
        var probes = input.Probes.Distinct().ToList();
        var done = 0;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var seconds = new JsonObject();
        var battery = new DiffusionBattery(baseModel, erased, scorer, concept, settings, p => context.Report((double)done++ / (probes.Count + 1), $"{input.Method}: {p}"), context.CancellationToken, input.Base.Digest);
        var results = new List<ProbeResult>();
        foreach (var r in battery.Run(probes))
        {
            results.Add(r);
            seconds[r.Probe] = Math.Round(watch.Elapsed.TotalSeconds, 1);
            watch.Restart();
            context.Log($"{r.Probe}: {r.Raw:F3} (B {r.Base:F3}, normalised {(r.Normalised is { } n ? n.ToString("F2", System.Globalization.CultureInfo.InvariantCulture) : "n/a")}, N {r.N})");
        }
        var extra = new JsonObject { ["images"] = battery.Rows().Count, ["seconds"] = seconds, ["scorer"] = Scorer(scorer, baseModel) };
        if (input.Checkpoints is { } checkpoints)
        {
            context.Report((double)done / (probes.Count + 1), $"{input.Method}: dynamics");
            extra["dynamics"] = Dynamics(checkpoints.Path, input.Base, baseModel, scorer, concept, settings, context);
        }
        var row = ErasureMatrix.Row(input.Method, input.Erased.Digest, results, extra, diffusion: true);
        ErasureMatrix.Write(context.OutputFile("matrix"), ErasureMatrix.Matrix(concept.Name, [row], "diffusion"));
        context.Log($"{input.Method}: {row["classification"]} ({row["reason"]})");
        return Task.CompletedTask;
    }

    private static JsonObject Scorer(ToyScorer scorer, DiffusionPipeline pipe)
    {
        var world = ToyDiffusionTrainer.WorldOf(pipe) ?? new ToyWorld(scorer.Side);
        var a = scorer.Evaluate(world);
        return new JsonObject { ["cleanShape"] = JsonNumbers.Round(a.Shape), ["cleanColour"] = JsonNumbers.Round(a.Colour), ["images"] = a.Images };
    }

    /// <summary>The standard probe's concept accuracy and the other concepts' accuracy at each checkpoint (its tensors over B).</summary>
    private static JsonArray Dynamics(string directory, Artifact baseArtifact, DiffusionPipeline baseModel, ToyScorer scorer, ToyConcept concept, DiffusionBatterySettings settings, ActivityContext context)
    {
        var points = new JsonArray();
        foreach (var (step, path) in ErasureCheckpoints.List(directory))
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            using var model = DiffusionArtifacts.Open(baseArtifact, "base");
            try
            {
                ErasureCheckpoints.Apply(model.Unet, path);
            }
            catch (Pipelines.Models.Checkpoints.CheckpointException e)
            {
                throw new ActivityException($"inputs.checkpoints: step-{step:D6}/{e.Message}", e);
            }
            var (acc, other) = DiffusionBattery.Point(model, baseModel, scorer, concept, settings);
            points.Add(new JsonObject { ["step"] = step, ["concept"] = JsonNumbers.Round(acc), ["others"] = JsonNumbers.Round(other) });
        }
        return points;
    }
}
