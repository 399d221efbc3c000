using Pipelines.Models.Runtime;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using static TorchSharp.torch;

namespace Pipelines.Activities.Diffusion;

/// <summary>Slider folders: one adapter (slider.safetensors, kohya names) or a SliderSpace set (slider-NN/slider.safetensors, pca.json).</summary>
public static class SliderFiles
{
    public const string File = "slider.safetensors";

    public static IReadOnlyList<(string Name, string Path)> List(string dir)
    {
        if (System.IO.File.Exists(Path.Combine(dir, File)))
        {
            return [("slider", Path.Combine(dir, File))];
        }
        var set = Directory.Exists(dir)
            ? Directory.GetDirectories(dir, "slider-*").Order(StringComparer.Ordinal).Where(d => System.IO.File.Exists(Path.Combine(d, File))).Select(d => (Path.GetFileName(d), Path.Combine(d, File))).ToList()
            : [];
        return set.Count > 0 ? set : throw new ActivityException($"inputs.sliders: no {File} (sliders.train) nor slider-NN folders (sliders.discover) in the artifact");
    }

    public static UNetLora Load(DiffusionPipeline pipe, string path)
    {
        try
        {
            return UNetLora.Load(pipe.Unet, path);
        }
        catch (Exception e) when (e is CheckpointException or ArgumentException)
        {
            throw new ActivityException($"inputs.sliders: {Path.GetFileName(Path.GetDirectoryName(path))}/{Path.GetFileName(path)}: {e.Message}", e);
        }
    }

    /// <summary>Mean change of the normalised scorer features when the slider is on at <paramref name="scale"/>, over seeds.</summary>
    public static Tensor Effect(DiffusionPipeline pipe, UNetLora slider, ToyScorer scorer, string prompt, int seeds, int steps, double guidance, double scale, long seed)
    {
        using var scope = NewDisposeScope();
        using var attached = slider.Attach();
        var request = new SampleRequest { Prompts = Enumerable.Repeat(prompt, seeds).ToList(), Seed = seed, Steps = steps, Guidance = guidance, Scheduler = "ddim" };
        slider.Multiplier = 0;
        var off = Sliders.Features(scorer, pipe.Sample(request));
        slider.Multiplier = scale;
        var on = Sliders.Features(scorer, pipe.Sample(request));
        slider.Multiplier = 1;
        return (on - off).mean([0L]).MoveToOuterDisposeScope();
    }
}

/// <summary>Concept Sliders: a LoRA slider from a prompt pair (research diffusion.md §3.4).</summary>
[Activity("sliders.train", Version = 1, Category = "Diffusion", Resources = ["gpu"], Summary = "Train a Concept Slider: a LoRA whose scale moves the image from the negative prompt's concept toward the positive's")]
[Output("slider", ArtifactKinds.Json, Help = "slider.safetensors (kohya names, alpha) and slider.json (prompts, target, rank)", MediaType = "inode/directory", FileName = "slider", IsDirectory = true)]
[Output("metrics", ArtifactKinds.Json, Help = "metrics.json: the loss curve and settings", MediaType = "application/json", FileName = "metrics.json")]
public sealed class SliderTrainActivity : Activity<SliderTrainActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Model { get; init; }

        [Input("The target prompt c_t (what the slider edits)")]
        public required string Target { get; init; }

        [Input("The positive prompt c₊ (the slider's + end)")]
        public required string Positive { get; init; }

        [Input("The negative prompt c₋ (the slider's − end)")]
        public required string Negative { get; init; }

        [Input("The neutral prompt (default: the target)")]
        public string Neutral { get; init; } = "";

        [Input("LoRA target: attn1 (Concept Sliders' noxattn default), attn2, attn2-qkv, attn2-kv, attn, linear, all")]
        public string Layers { get; init; } = "attn1";

        [Input("LoRA rank", Minimum = 1, Maximum = 256)]
        public int Rank { get; init; } = 4;

        [Input("η: how far the target moves along positive − negative", Minimum = 0)]
        public double Eta { get; init; } = 4.0;

        [Input("Iterations", Minimum = 1, Maximum = 1_000_000)]
        public int Iterations { get; init; } = 300;

        [Input("AdamW learning rate", Minimum = 0)]
        public double LearningRate { get; init; } = 2e-3;

        [Input("Seed")]
        public long Seed { get; init; }
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Layers).Must(l => UNetLora.Presets.ContainsKey(l)).WithMessage(i => $"unknown LoRA target \"{i.Layers}\"; expected one of {string.Join(", ", UNetLora.Presets.Keys)}");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var pipe = DiffusionArtifacts.Open(input.Model);
        var options = new SliderOptions { Target = input.Layers, Rank = input.Rank, Eta = input.Eta, Iterations = input.Iterations, LearningRate = input.LearningRate, Seed = input.Seed };
        var neutral = input.Neutral.Length > 0 ? input.Neutral : input.Target;
        var (slider, losses) = Sliders.Train(pipe, input.Target, input.Positive, input.Negative, neutral, options, (s, l) => context.Report((double)s / input.Iterations, $"iteration {s}, loss {l:F5}"), context.CancellationToken);
        using (slider)
        {
            var dir = context.OutputDirectory("slider");
            slider.Save(Path.Combine(dir, SliderFiles.File));
            File.WriteAllText(Path.Combine(dir, "slider.json"), new JsonObject
            {
                ["target"] = input.Target, ["positive"] = input.Positive, ["negative"] = input.Negative, ["neutral"] = neutral, ["layers"] = input.Layers, ["rank"] = input.Rank, ["eta"] = input.Eta,
            }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        }
        File.WriteAllText(context.OutputFile("metrics"), new JsonObject
        {
            ["settings"] = JsonSerializer.SerializeToNode(options),
            ["loss"] = new JsonArray(losses.Select(l => (JsonNode)new JsonArray(l.Step, Math.Round(l.Loss, 6))).ToArray()),
        }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"slider \"{input.Negative}\" ↔ \"{input.Positive}\" on \"{input.Target}\": loss {losses[0].Loss:F4} → {losses[^1].Loss:F4}");
        return Task.CompletedTask;
    }
}

/// <summary>SliderSpace: directions of variation discovered from one prompt, one rank-1 slider each (research diffusion.md §5).</summary>
[Activity("sliders.discover", Version = 1, Category = "Diffusion", Resources = ["gpu"], Summary = "SliderSpace: sample one prompt many times, PCA over scorer features, and train a rank-1 slider per principal direction")]
[Output("sliders", ArtifactKinds.Json, Help = "slider-NN/slider.safetensors per direction, and pca.json (components, variance shares)", MediaType = "inode/directory", FileName = "sliders", IsDirectory = true)]
[Output("metrics", ArtifactKinds.Json, Help = "metrics.json: the loss, each slider's measured feature change against every component, the sliders' pairwise cosines, what each component tracks in the scorer's factors", MediaType = "application/json", FileName = "metrics.json")]
public sealed class SliderDiscoverActivity : Activity<SliderDiscoverActivity.Input>
{
    public sealed record Input
    {
        [Input("The model", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Model { get; init; }

        [Input("The scorer whose 64-d feature stands in for CLIP", Kind = ArtifactKinds.Scorer)]
        public required Artifact Scorer { get; init; }

        [Input("The prompt whose variation is discovered")]
        public required string Prompt { get; init; }

        [Input("Images sampled for the PCA", Minimum = 8, Maximum = 100_000)]
        public int Samples { get; init; } = 256;

        [Input("Directions (sliders)", Minimum = 1, Maximum = 64)]
        public int Sliders { get; init; } = 4;

        [Input("Training iterations (each trains up to 3 random sliders)", Minimum = 1, Maximum = 1_000_000)]
        public int Iterations { get; init; } = 300;

        [Input("AdamW learning rate of the sliders' down projections", Minimum = 0)]
        public double LearningRate { get; init; } = 2e-3;

        [Input("Guidance of the sampling")]
        public double Guidance { get; init; } = 3.0;

        [Input("Seeds per slider when its effect is measured after training", Minimum = 2, Maximum = 1024)]
        public int EvalSeeds { get; init; } = 32;

        [Input("Seed")]
        public long Seed { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var pipe = DiffusionArtifacts.Open(input.Model);
        using var scorer = DiffusionArtifacts.OpenScorer(input.Scorer)!;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var options = new SliderSpaceOptions { Samples = input.Samples, Sliders = input.Sliders, Iterations = input.Iterations, LearningRate = input.LearningRate, Guidance = input.Guidance, Seed = input.Seed };
        var result = Sliders.Discover(pipe, scorer, input.Prompt, options, (m, f) => context.Report(0.8 * f, m), context.CancellationToken);
        var trainSeconds = watch.Elapsed.TotalSeconds;
        var dir = context.OutputDirectory("sliders");
        var effects = new List<Tensor>();
        try
        {
            for (var i = 0; i < result.Sliders.Count; i++)
            {
                var sub = Directory.CreateDirectory(Path.Combine(dir, $"slider-{i:D2}")).FullName;
                result.Sliders[i].Save(Path.Combine(sub, SliderFiles.File));
                context.Report(0.8 + 0.2 * i / result.Sliders.Count, $"measuring slider {i}");
                effects.Add(SliderFiles.Effect(pipe, result.Sliders[i], scorer, input.Prompt, input.EvalSeeds, 20, input.Guidance, 1.0, input.Seed + 77));
            }
            var components = result.Components;
            var alignment = new JsonArray();
            var pairwise = new JsonArray();
            for (var i = 0; i < effects.Count; i++)
            {
                alignment.Add(new JsonArray(Enumerable.Range(0, effects.Count).Select(j => JsonNumbers.Round(Cos(effects[i], components[j]))).ToArray()));
                pairwise.Add(new JsonArray(Enumerable.Range(0, effects.Count).Select(j => JsonNumbers.Round(Cos(effects[i], effects[j]))).ToArray()));
            }
            File.WriteAllText(Path.Combine(dir, "pca.json"), new JsonObject
            {
                ["prompt"] = input.Prompt, ["samples"] = input.Samples, ["features"] = "the scorer's 64-d feature, L2-normalised",
                ["explained"] = new JsonArray(result.Explained.Select(e => JsonNumbers.Round(e)).ToArray()),
                ["components"] = new JsonArray(Enumerable.Range(0, (int)components.shape[0]).Select(i => (JsonNode)new JsonArray(components[i].data<float>().Select(v => (JsonNode)Math.Round(v, 6)).ToArray())).ToArray()),
            }.ToJsonString() + "\n");
            var secondsPerSlider = trainSeconds / result.Sliders.Count;
            File.WriteAllText(context.OutputFile("metrics"), new JsonObject
            {
                ["settings"] = JsonSerializer.SerializeToNode(options),
                ["loss"] = new JsonArray(result.Losses.Select(l => (JsonNode)new JsonArray(l.Step, Math.Round(l.Loss, 5))).ToArray()),
                ["explained"] = new JsonArray(result.Explained.Select(e => JsonNumbers.Round(e)).ToArray()),
                ["alignment"] = alignment,
                ["alignmentReading"] = "row i, column j: cosine between slider i's mean feature change (scale 1, full sampling, evalSeeds seeds) and principal component j",
                ["pairwiseCosine"] = pairwise,
                ["secondsPerSlider"] = Math.Round(secondsPerSlider, 1),
            }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
            context.Log($"{result.Sliders.Count} sliders in {trainSeconds:F0} s ({secondsPerSlider:F0} s each); slider i vs PC i: "
                + string.Join(", ", Enumerable.Range(0, effects.Count).Select(i => Cos(effects[i], components[i]).ToString("F2", CultureInfo.InvariantCulture))));
        }
        finally
        {
            effects.ForEach(e => e.Dispose());
            result.Sliders.ToList().ForEach(s => s.Dispose());
            result.Components.Dispose();
        }
        return Task.CompletedTask;
    }

    private static double Cos(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var n = a.norm().item<float>() * b.norm().item<float>();
        return n == 0 ? 0 : (a * b).sum().item<float>() / n;
    }
}

/// <summary>A slider's (or a SliderSpace set's) effect: its scale swept over seeds, as a grid and a table of the scorer's readings.</summary>
[Activity("sliders.apply", Version = 1, Category = "Diffusion", Resources = ["gpu"], Summary = "Sweep sliders' scales over seeds on a model (the base or a distilled student with the same keys) into grids, with the scorer's readings per scale")]
[Output("grid", ArtifactKinds.Plot, Help = "grid.png: one block per slider, a row per seed, a column per scale", MediaType = "image/png", FileName = "grid.png")]
[Output("table", ArtifactKinds.Json, Help = "table.json: per slider and scale, the scorer's mean size, shape and colour shares and the feature change from scale 0", MediaType = "application/json", FileName = "table.json")]
public sealed class SliderApplyActivity : Activity<SliderApplyActivity.Input>
{
    public sealed record Input
    {
        [Input("The model to apply the sliders to (their keys must exist in its UNet)", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Model { get; init; }

        [Input("sliders.train's slider or sliders.discover's set", Kind = ArtifactKinds.Json)]
        public required Artifact Sliders { get; init; }

        [Input("The scorer, for the readings (optional)", Kind = ArtifactKinds.Scorer)]
        public Artifact? Scorer { get; init; }

        [Input("The prompt")]
        public required string Prompt { get; init; }

        [Input("Slider scales (0 is the model itself)")]
        public IReadOnlyList<double> Scales { get; init; } = [-2, -1, 0, 1, 2];

        [Input("Seeds (rows)", Minimum = 1, Maximum = 256)]
        public int Seeds { get; init; } = 4;

        [Input("Denoising steps (DDIM)", Minimum = 1, Maximum = 1000)]
        public int Steps { get; init; } = 20;

        [Input("Guidance (0 for a distilled student)")]
        public double Guidance { get; init; } = 3.0;

        [Input("Seed of the first row")]
        public long Seed { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var pipe = DiffusionArtifacts.Open(input.Model);
        using var scorer = DiffusionArtifacts.OpenScorer(input.Scorer);
        var list = SliderFiles.List(input.Sliders.Path);
        var tiles = new List<Png.Rgb>();
        var table = new JsonObject();
        var done = 0;
        foreach (var (name, path) in list)
        {
            using var slider = SliderFiles.Load(pipe, path);
            using var attached = slider.Attach();
            var rows = new Png.Rgb[input.Seeds, input.Scales.Count];
            var readings = new JsonObject();
            Tensor? reference = null;
            var sheets = new List<Tensor>();
            for (var j = 0; j < input.Scales.Count; j++)
            {
                context.CancellationToken.ThrowIfCancellationRequested();
                slider.Multiplier = input.Scales[j];
                var images = pipe.Sample(new SampleRequest { Prompts = Enumerable.Repeat(input.Prompt, input.Seeds).ToList(), Seed = input.Seed, Steps = input.Steps, Guidance = input.Guidance, Scheduler = "ddim" });
                sheets.Add(images);
                for (var i = 0; i < input.Seeds; i++)
                {
                    rows[i, j] = Png.FromTensor(images[i]);
                }
                context.Report((done + (j + 1.0) / input.Scales.Count) / list.Count, $"{name}: scale {input.Scales[j]}");
            }
            if (scorer is not null)
            {
                using var noGrad = no_grad();
                var zero = input.Scales.ToList().IndexOf(0);
                reference = zero >= 0 ? Sliders.Features(scorer, sheets[zero]) : null;
                for (var j = 0; j < input.Scales.Count; j++)
                {
                    using var scope = NewDisposeScope();
                    var o = scorer.Forward(sheets[j].clamp(Scalars.Int(-1), Scalars.Int(1)));
                    var shapes = o.ShapeLogits.argmax(1).data<long>().ToArray();
                    var colours = o.ColourLogits.argmax(1).data<long>().ToArray();
                    var size = o.Size.mean().item<float>();
                    var reading = new JsonObject
                    {
                        ["size"] = JsonNumbers.Round(ToyWorld.MinSize + size * (ToyWorld.MaxSize - ToyWorld.MinSize)),
                        ["shapes"] = new JsonObject(ToyWorld.Shapes.Select((s, k) => new KeyValuePair<string, JsonNode?>(s, JsonNumbers.Round(shapes.Count(x => x == k) / (double)shapes.Length)))),
                        ["colours"] = new JsonObject(ToyWorld.Colours.Select((c, k) => new KeyValuePair<string, JsonNode?>(c, JsonNumbers.Round(colours.Count(x => x == k) / (double)colours.Length)))),
                    };
                    if (reference is not null)
                    {
                        reading["featureChange"] = JsonNumbers.Round((Sliders.Features(scorer, sheets[j]) - reference).norm(1).mean().item<float>());
                    }
                    readings[input.Scales[j].ToString(CultureInfo.InvariantCulture)] = reading;
                }
                reference?.Dispose();
            }
            sheets.ForEach(t => t.Dispose());
            for (var i = 0; i < input.Seeds; i++)
            {
                for (var j = 0; j < input.Scales.Count; j++)
                {
                    tiles.Add(rows[i, j]);
                }
            }
            table[name] = new JsonObject { ["scales"] = new JsonArray(input.Scales.Select(s => (JsonNode)s).ToArray()), ["readings"] = readings };
            done++;
        }
        Png.Write(context.OutputFile("grid"), Png.Grid(tiles, input.Scales.Count, pipe.DefaultSize <= 32 ? 4 : 1));
        File.WriteAllText(context.OutputFile("table"), new JsonObject { ["prompt"] = input.Prompt, ["sliders"] = table }.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"{list.Count} slider(s) × {input.Scales.Count} scales × {input.Seeds} seeds");
        return Task.CompletedTask;
    }
}
