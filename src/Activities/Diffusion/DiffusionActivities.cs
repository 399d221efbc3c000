using Stopwatch = System.Diagnostics.Stopwatch;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Activities.Diffusion;

/// <summary>The samplers a workflow names.</summary>
public enum DiffusionScheduler { Default, Ddim, Ddpm, Pndm, Euler, Lms }

/// <summary>Sampling rows (prompt, seed) in chunks, each row from its own seeded noise.</summary>
public static class DiffusionSampling
{
    public static string? Name(DiffusionScheduler s) => s == DiffusionScheduler.Default ? null : s.ToString().ToLowerInvariant();

    public static Tensor Sample(DiffusionPipeline pipe, IReadOnlyList<(string Prompt, long Seed)> rows, int steps, DiffusionScheduler scheduler, double guidance, double eta,
        string negative, ActivityContext context, Action<int, DenoiseStep>? onStep = null)
    {
        var side = pipe.DefaultSize;
        var outputs = new List<Tensor>();
        var done = 0;
        foreach (var chunk in rows.Chunk(64))
        {
            var s = Scheduler.Create(Name(scheduler), pipe.SchedulerConfig);
            s.SetTimesteps(steps);
            if (s is DdimScheduler d)
            {
                d.Eta = eta;
            }
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var cond = pipe.EncodePrompts(chunk.Select(r => r.Prompt));
            var uncond = guidance > 1 ? pipe.EncodePrompts(Enumerable.Repeat(negative, chunk.Length)) : null;
            var noise = DiffusionArtifacts.Noise(pipe, chunk, side).mul(Scalars.Of(s.InitNoiseSigma));
            using var g = new Generator((ulong)(chunk[0].Seed * 31 + done));
            var offset = done;
            var final = pipe.Denoise(s, noise, uncond, cond, guidance, onStep: st =>
            {
                onStep?.Invoke(offset, st);
                context.Report((offset + (st.Index + 1.0) / s.Timesteps.Length * chunk.Length) / rows.Count, $"step {st.Index + 1}/{s.Timesteps.Length}");
            }, generator: g, cancel: context.CancellationToken);
            outputs.Add(pipe.Decode(final).MoveToOuterDisposeScope());
            done += chunk.Length;
        }
        var all = cat(outputs, 0);
        foreach (var o in outputs)
        {
            o.Dispose();
        }
        return all;
    }

    /// <summary>UNet evaluations per image of a plain run: PNDM adds one, guidance doubles.</summary>
    public static int Calls(DiffusionPipeline pipe, int steps, DiffusionScheduler scheduler, double guidance)
    {
        var s = Scheduler.Create(Name(scheduler), pipe.SchedulerConfig);
        s.SetTimesteps(steps);
        return s.Timesteps.Length * (guidance > 1 ? 2 : 1);
    }
}

/// <summary>Trains the toy world's text-to-image model and its scorer.</summary>
[Activity("diffusion.train-toy", Version = 1, Category = "Diffusion", Resources = ["gpu"], Summary = "Train the toy world's text-to-image model (a pixel-space UNet2DConditionModel with a CLIP text encoder, diffusers' layout) and the scorer CNN that stands in for ResNet-50 and CLIP")]
[Output("model", ArtifactKinds.DiffusionModel, Help = "A diffusers pipeline folder (no VAE: latents are pixels)", MediaType = "inode/directory", FileName = "model", IsDirectory = true)]
[Output("scorer", ArtifactKinds.Scorer, Help = "The scorer CNN (config.json + model.safetensors): shape, colour and size heads and a 64-d feature", MediaType = "inode/directory", FileName = "scorer", IsDirectory = true)]
[Output("metrics", ArtifactKinds.Json, Help = "Loss curve, the scorer's clean accuracy, and generation fidelity at the evaluation guidance", MediaType = "application/json", FileName = "metrics.json")]
[Output("samples", ArtifactKinds.Plot, Help = "Every colour × shape prompt, sampled with guidance", MediaType = "image/png", FileName = "samples.png")]
public sealed class DiffusionTrainToyActivity : Activity<DiffusionTrainToyActivity.Input>
{
    public sealed record Input
    {
        [Input("Image side: 16 (default) or 32 (the preset with striped textures)", Minimum = 16, Maximum = 32)]
        public int Size { get; init; } = 16;

        [Input("Denoiser training steps (batch 32; about 0.2 s a step at 16 px on 2 cores). Shape fidelity appears late: about 0.3 up to 3,000 steps, 0.9 by 5,000", Minimum = 1, Maximum = 1_000_000)]
        public int Steps { get; init; } = 5000;

        [Input("Examples per step", Minimum = 1, Maximum = 1024)]
        public int BatchSize { get; init; } = 32;

        [Input("AdamW learning rate (100-step warm-up)", Minimum = 0)]
        public double LearningRate { get; init; } = 1e-3;

        [Input("Scorer training steps (batch 64)", Minimum = 1, Maximum = 1_000_000)]
        public int ScorerSteps { get; init; } = 3000;

        [Input("Guidance for the fidelity check and the sample sheet (20 DDIM steps each)")]
        public double Guidance { get; init; } = 3.0;

        [Input("Samples per prompt in the fidelity check", Minimum = 1, Maximum = 256)]
        public int EvalSamples { get; init; } = 8;

        [Input("Seed for initialisation and data")]
        public long Seed { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (input.Size is not (16 or 32))
        {
            throw new ActivityException("inputs.size: expected 16 or 32");
        }
        var world = new ToyWorld(input.Size, input.Size == 32);
        var watch = Stopwatch.StartNew();
        using var scorer = ToyScorer.Train(world, input.ScorerSteps, input.Seed + 101, (s, l) => context.Report(0.1 * s / input.ScorerSteps, $"scorer step {s}, loss {l:F3}"), context.CancellationToken);
        scorer.Save(context.OutputDirectory("scorer"));
        var accuracy = scorer.Evaluate(world);
        context.Log($"scorer: shape {accuracy.Shape:P1}, colour {accuracy.Colour:P1}, size r {accuracy.SizeCorrelation:F3} on {accuracy.Images} clean images ({watch.Elapsed.TotalSeconds:F0} s)");
        var (pipe, losses) = ToyDiffusionTrainer.Train(new ToyDiffusionOptions { Size = input.Size, Textures = input.Size == 32, Steps = input.Steps, BatchSize = input.BatchSize, LearningRate = input.LearningRate, Seed = input.Seed },
            (s, l) => context.Report(0.1 + 0.8 * s / input.Steps, $"denoiser step {s}, loss {l:F4}"), context.CancellationToken);
        using (pipe)
        {
            pipe.Save(context.OutputDirectory("model"));
            var trainSeconds = watch.Elapsed.TotalSeconds;
            context.Report(0.92, "fidelity check");
            var fidelity = ToyDiffusionTrainer.Fidelity(pipe, scorer, input.Guidance, 20, input.EvalSamples, input.Seed + 7);
            var sheet = pipe.Sample(new SampleRequest { Prompts = ToyWorld.ColourShapePrompts().SelectMany(p => Enumerable.Repeat(p.Prompt, 4)).ToList(), Seed = input.Seed + 9, Steps = 20, Guidance = input.Guidance, Scheduler = "ddim" });
            using (sheet)
            {
                Png.Write(context.OutputFile("samples"), Png.Grid(Enumerable.Range(0, (int)sheet.shape[0]).Select(i => Png.FromTensor(sheet[i])).ToList(), 8, 4));
            }
            var metrics = new JsonObject
            {
                ["world"] = new JsonObject { ["size"] = input.Size, ["textures"] = input.Size == 32 },
                ["steps"] = input.Steps, ["finalLoss"] = Math.Round(losses[^1].Loss, 5),
                ["loss"] = new JsonArray(losses.Select(l => (JsonNode?)new JsonArray(l.Step, Math.Round(l.Loss, 5))).ToArray()),
                ["scorer"] = new JsonObject { ["shape"] = accuracy.Shape, ["colour"] = accuracy.Colour, ["sizeCorrelation"] = Math.Round(accuracy.SizeCorrelation, 4), ["images"] = accuracy.Images },
                ["fidelity"] = new JsonObject { ["guidance"] = input.Guidance, ["steps"] = 20, ["samplesPerPrompt"] = input.EvalSamples, ["shape"] = fidelity.Shape, ["colour"] = fidelity.Colour },
                ["trainSeconds"] = Math.Round(trainSeconds, 1),
            };
            File.WriteAllText(context.OutputFile("metrics"), metrics.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            context.Log($"denoiser: loss {losses[^1].Loss:F4} after {input.Steps} steps ({trainSeconds:F0} s); with guidance {input.Guidance}: shape {fidelity.Shape:P1}, colour {fidelity.Colour:P1} (scorer clean: shape {accuracy.Shape:P1}, colour {accuracy.Colour:P1})");
        }
        return Task.CompletedTask;
    }
}

/// <summary>Turns a diffusers pipeline folder on disk into a DiffusionModel artifact.</summary>
[Activity("diffusion.load", Version = 1, Category = "Diffusion", Summary = "Load a diffusers pipeline folder (Stable Diffusion 1.x/2.x layout: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/; fp32 or fp16 safetensors) as a DiffusionModel")]
[Output("model", ArtifactKinds.DiffusionModel, Help = "The pipeline folder's config, weight, tokenizer and scheduler files", MediaType = "inode/directory", FileName = "model", IsDirectory = true)]
public sealed class DiffusionLoadActivity : Activity<DiffusionLoadActivity.Input>
{
    public sealed record Input
    {
        [Input("The pipeline folder (model_index.json beside unet/, text_encoder/, tokenizer/, scheduler/ and optionally vae/)", IsPath = true, PathKind = PathKind.Directory)]
        public required string Path { get; init; }
    }

    private static readonly string[] Parts = ["unet", "vae", "text_encoder", "tokenizer", "scheduler"];
    private static readonly string[] Files =
    [
        "config.json", "scheduler_config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors", "model.safetensors", "model.fp16.safetensors",
        "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
    ];

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        try
        {
            // Load once from the user's folder, so every error names it (not the store's copy).
            using var check = DiffusionPipeline.Load(input.Path);
            context.Log($"{check.Unet.Config.BlockOutChannels.Length}-level UNet ({check.Unet.parameters().Sum(p => p.numel()):N0} parameters), {(check.Vae is null ? "no VAE" : "VAE")}, text width {check.TextEncoder.Config.HiddenSize}, {check.SchedulerConfig.ClassName}");
        }
        catch (CheckpointException e)
        {
            throw new ActivityException(e.Message, e);
        }
        var output = context.OutputDirectory("model");
        File.Copy(System.IO.Path.Combine(input.Path, DiffusionPipeline.IndexFile), System.IO.Path.Combine(output, DiffusionPipeline.IndexFile));
        foreach (var part in Parts)
        {
            var src = System.IO.Path.Combine(input.Path, part);
            if (!Directory.Exists(src))
            {
                continue;
            }
            var dst = Directory.CreateDirectory(System.IO.Path.Combine(output, part)).FullName;
            foreach (var file in Directory.EnumerateFiles(src).Where(f => Files.Contains(System.IO.Path.GetFileName(f)) || System.IO.Path.GetFileName(f).EndsWith(".safetensors", StringComparison.Ordinal) || f.EndsWith(".index.json", StringComparison.Ordinal)))
            {
                File.Copy(file, System.IO.Path.Combine(dst, System.IO.Path.GetFileName(file)));
            }
        }
        return Task.CompletedTask;
    }
}

/// <summary>Samples prompts × seeds into an image grid, scored by the toy scorer when one is given.</summary>
[Activity("diffusion.sample", Version = 1, Category = "Diffusion", Resources = ["gpu"], Summary = "Sample prompts × seeds with a diffusion model into an image grid, with per-image scorer outputs and fidelity")]
[Output("images", ArtifactKinds.Images, Help = "images.safetensors, samples.json (prompt, seed, scorer outputs, cost) and grid.png", MediaType = "inode/directory", FileName = "images", IsDirectory = true)]
public sealed class DiffusionSampleActivity : Activity<DiffusionSampleActivity.Input>
{
    public sealed record Input
    {
        [Input("The diffusion model", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Model { get; init; }

        [Input("The toy scorer (optional): per-image shape, colour and size, and fidelity to the prompt", Kind = ArtifactKinds.Scorer)]
        public Artifact? Scorer { get; init; }

        [Input("Prompts (empty with a toy model: every colour × shape)")]
        public IReadOnlyList<string> Prompts { get; init; } = [];

        [Input("One more prompt, after the list (lets a workflow parameter give the prompt)")]
        public string? Prompt { get; init; }

        [Input("The negative prompt (the unconditional side of guidance)")]
        public string Negative { get; init; } = "";

        [Input("Images per prompt (sample j uses seed + j)", Minimum = 1, Maximum = 1024)]
        public int Samples { get; init; } = 4;

        [Input("Seed of the first image's noise")]
        public long Seed { get; init; }

        [Input("Denoising steps", Minimum = 1, Maximum = 1000)]
        public int Steps { get; init; } = 50;

        [Input("default (the model's scheduler), ddim, ddpm, pndm, euler or lms")]
        public DiffusionScheduler Scheduler { get; init; } = DiffusionScheduler.Default;

        [Input("Classifier-free guidance w (≤ 1: none)")]
        public double Guidance { get; init; } = 7.5;

        [Input("DDIM's η (0: deterministic)", Minimum = 0, Maximum = 1)]
        public double Eta { get; init; }

        [Input("A name for this sampler in reports")]
        public string Label { get; init; } = "base";
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var pipe = DiffusionArtifacts.Open(input.Model);
        using var scorer = DiffusionArtifacts.OpenScorer(input.Scorer);
        var rows = DiffusionArtifacts.Rows(DiffusionArtifacts.Prompts(input.Prompts, input.Prompt, pipe), input.Samples, input.Seed);
        var watch = Stopwatch.StartNew();
        using var images = DiffusionSampling.Sample(pipe, rows, input.Steps, input.Scheduler, input.Guidance, input.Eta, input.Negative, context);
        var calls = DiffusionSampling.Calls(pipe, input.Steps, input.Scheduler, input.Guidance);
        var set = ImageSet.Build(input.Label, $"{input.Steps} {DiffusionSampling.Name(input.Scheduler) ?? pipe.SchedulerConfig.ClassName} steps, guidance {input.Guidance}", calls, rows, images, scorer, ToyDiffusionTrainer.WorldOf(pipe), watch.Elapsed.TotalSeconds);
        set.Write(context.OutputDirectory("images"), images);
        context.Log($"{rows.Count} images, {calls} UNet calls each, {watch.Elapsed.TotalSeconds / rows.Count:F2} s per image" +
            (set.FidelityShape is null ? "" : $"; fidelity shape {ImageSet.Percent(set.FidelityShape)}, colour {ImageSet.Percent(set.FidelityColour)} (scorer clean shape {ImageSet.Percent(set.Scorer?.Shape)})"));
        return Task.CompletedTask;
    }
}
