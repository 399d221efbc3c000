using Stopwatch = System.Diagnostics.Stopwatch;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Models.Common;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using static TorchSharp.torch;

namespace Pipelines.Activities.Diffusion;

/// <summary>DT-visualization: the predicted clean image at every step, as a strip per sample.</summary>
[Activity("diffusion.dt-visualize", Version = 1, Category = "Diffusion", Resources = ["gpu"], Summary = "DT-visualization: the predicted x0 at every denoising step as a strip per sample, and how far each step's prediction is from the final image")]
[Output("strips", ArtifactKinds.Plot, Help = "One row per sample, one column per shown step (the last column is the final image)", MediaType = "image/png", FileName = "strips.png")]
[Output("dt", ArtifactKinds.Json, Help = "Per step: timestep, mean feature distance (1 − cos, scorer features) from x̂0 to the final image, and the share whose predicted shape already matches the final one", MediaType = "application/json", FileName = "dt.json")]
public sealed class DiffusionDtVisualizeActivity : Activity<DiffusionDtVisualizeActivity.Input>
{
    public sealed record Input
    {
        [Input("The diffusion model", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Model { get; init; }

        [Input("The toy scorer (optional): distances are measured on its features", Kind = ArtifactKinds.Scorer)]
        public Artifact? Scorer { get; init; }

        [Input("Prompts (empty with a toy model: every colour × shape)")]
        public IReadOnlyList<string> Prompts { get; init; } = [];

        [Input("One more prompt, after the list (lets a workflow parameter give the prompt)")]
        public string? Prompt { get; init; }

        [Input("Samples per prompt", Minimum = 1, Maximum = 64)]
        public int Samples { get; init; } = 2;

        [Input("Seed")]
        public long Seed { get; init; }

        [Input("Denoising steps", Minimum = 1, Maximum = 1000)]
        public int Steps { get; init; } = 50;

        [Input("default, ddim, ddpm, pndm, euler or lms")]
        public DiffusionScheduler Scheduler { get; init; } = DiffusionScheduler.Ddim;

        [Input("Classifier-free guidance w")]
        public double Guidance { get; init; } = 3.0;

        [Input("Columns shown per strip (steps evenly spaced, the last always)", Minimum = 2, Maximum = 64)]
        public int Columns { get; init; } = 10;

        [Input("Rows shown (samples)", Minimum = 1, Maximum = 256)]
        public int MaxRows { get; init; } = 16;
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var pipe = DiffusionArtifacts.Open(input.Model);
        using var scorer = DiffusionArtifacts.OpenScorer(input.Scorer);
        var rows = DiffusionArtifacts.Rows(DiffusionArtifacts.Prompts(input.Prompts, input.Prompt, pipe), input.Samples, input.Seed);
        var x0s = new List<List<Tensor>>();
        var timesteps = new List<double>();
        using var images = DiffusionSampling.Sample(pipe, rows, input.Steps, input.Scheduler, input.Guidance, 0, "", context, (offset, st) =>
        {
            if (offset == 0)
            {
                timesteps.Add(st.Timestep);
            }
            while (x0s.Count <= st.Index)
            {
                x0s.Add([]);
            }
            x0s[st.Index].Add(pipe.Decode(st.X0).detach().clone().DetachFromDisposeScope());
        });
        var perStep = x0s.Select(list => cat(list, 0)).ToList();
        foreach (var t in x0s.SelectMany(l => l))
        {
            t.Dispose();
        }
        var n = perStep.Count;
        var shown = Enumerable.Range(0, input.Columns - 1).Select(i => (int)Math.Round(i * (n - 1.0) / (input.Columns - 1))).Distinct().ToList();
        var tiles = new List<Png.Rgb>();
        var rowsShown = Math.Min(rows.Count, input.MaxRows);
        for (var r = 0; r < rowsShown; r++)
        {
            tiles.AddRange(shown.Select(k => Png.FromTensor(perStep[k][r])));
            tiles.Add(Png.FromTensor(images[r]));
        }
        Png.Write(context.OutputFile("strips"), Png.Grid(tiles, shown.Count + 1, tiles[0].Width < 64 ? 4 : 1));
        var steps = new JsonArray();
        using (no_grad())
        {
            var final = scorer?.Forward(images);
            for (var k = 0; k < n; k++)
            {
                var entry = new JsonObject { ["step"] = k + 1, ["timestep"] = timesteps[k] };
                if (scorer is not null)
                {
                    using var scope = NewDisposeScope();
                    var o = scorer.Forward(perStep[k]);
                    var cos = nn.functional.cosine_similarity(o.Features, final!.Features, 1);
                    entry["distance"] = Math.Round(1 - cos.mean().item<float>(), 5);
                    entry["shapeSettled"] = Math.Round((o.ShapeLogits.argmax(1) == final.ShapeLogits.argmax(1)).to(ScalarType.Float32).mean().item<float>(), 4);
                }
                steps.Add(entry);
            }
        }
        foreach (var t in perStep)
        {
            t.Dispose();
        }
        var doc = new JsonObject
        {
            ["format"] = "pipelines.dt/1", ["model"] = ToyDiffusionTrainer.WorldOf(pipe) is null ? "diffusion model" : "toy", ["steps"] = input.Steps,
            ["scheduler"] = DiffusionSampling.Name(input.Scheduler) ?? pipe.SchedulerConfig.ClassName, ["guidance"] = input.Guidance, ["samples"] = rows.Count, ["perStep"] = steps,
        };
        File.WriteAllText(context.OutputFile("dt"), doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        if (scorer is not null)
        {
            var settled = steps.Select(s => s!["distance"]!.GetValue<double>()).ToList().FindIndex(d => d < 0.05);
            context.Log($"x̂0 within 0.05 feature distance of the final image from step {(settled < 0 ? "–" : (settled + 1).ToString(System.Globalization.CultureInfo.InvariantCulture))} of {n}");
        }
        return Task.CompletedTask;
    }
}

/// <summary>A few-step student of a diffusion model by trajectory regression.</summary>
[Activity("diffusion.distill", Version = 1, Category = "Diffusion", Resources = ["gpu"], Summary = "Distil a 1–8-step student from a diffusion model by trajectory regression on the teacher's guided DDIM trajectories (guidance baked in; same keys, so LoRA sliders transfer)")]
[Output("model", ArtifactKinds.DiffusionModel, Help = "The student, a pipeline folder with a trailing K-step DDIM schedule (sample it with guidance ≤ 1)", MediaType = "inode/directory", FileName = "model", IsDirectory = true)]
[Output("metrics", ArtifactKinds.Json, Help = "Teacher settings, the student's schedule and the loss curve", MediaType = "application/json", FileName = "metrics.json")]
public sealed class DiffusionDistillActivity : Activity<DiffusionDistillActivity.Input>
{
    public sealed record Input
    {
        [Input("The teacher", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Model { get; init; }

        [Input("Prompts to distil on (empty with a toy model: every colour × shape)")]
        public IReadOnlyList<string> Prompts { get; init; } = [];

        [Input("The student's steps K", Minimum = 1, Maximum = 8)]
        public int StudentSteps { get; init; } = 4;

        [Input("Teacher DDIM steps per student step", Minimum = 1, Maximum = 100)]
        public int TeacherSubsteps { get; init; } = 12;

        [Input("The teacher's guidance, baked into the student")]
        public double TeacherGuidance { get; init; } = 3.0;

        [Input("Teacher trajectories per prompt", Minimum = 1, Maximum = 4096)]
        public int Trajectories { get; init; } = 24;

        [Input("Student training steps", Minimum = 1, Maximum = 1_000_000)]
        public int TrainSteps { get; init; } = 800;

        [Input("Examples per step", Minimum = 1, Maximum = 1024)]
        public int BatchSize { get; init; } = 32;

        [Input("AdamW learning rate", Minimum = 0)]
        public double LearningRate { get; init; } = 2e-4;

        [Input("Seed")]
        public long Seed { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var teacher = DiffusionArtifacts.Open(input.Model);
        var prompts = DiffusionArtifacts.Prompts(input.Prompts, null, teacher);
        var watch = Stopwatch.StartNew();
        var options = new DistillOptions
        {
            StudentSteps = input.StudentSteps, TeacherSubsteps = input.TeacherSubsteps, TeacherGuidance = input.TeacherGuidance, TrajectoriesPerPrompt = input.Trajectories,
            TrainSteps = input.TrainSteps, BatchSize = input.BatchSize, LearningRate = input.LearningRate, Seed = input.Seed,
        };
        var (student, losses) = Distillation.Distill(teacher, prompts, options, (phase, done, total, loss) =>
            context.Report(phase == "teacher" ? 0.3 * done / total : 0.3 + 0.7 * done / total, phase == "teacher" ? $"teacher trajectories {done}/{total}" : $"student step {done}/{total}, loss {loss:F4}"), context.CancellationToken);
        using (student)
        {
            student.Save(context.OutputDirectory("model"));
        }
        var metrics = new JsonObject
        {
            ["method"] = "trajectory regression", ["studentSteps"] = input.StudentSteps, ["timesteps"] = new JsonArray(Distillation.StudentTimesteps(teacher.SchedulerConfig, input.StudentSteps).Select(t => (JsonNode?)t).ToArray()),
            ["teacherGuidance"] = input.TeacherGuidance, ["teacherSubsteps"] = input.TeacherSubsteps, ["trajectories"] = prompts.Count * input.Trajectories,
            ["finalLoss"] = Math.Round(losses[^1].Loss, 5), ["loss"] = new JsonArray(losses.Select(l => (JsonNode?)new JsonArray(l.Step, Math.Round(l.Loss, 5))).ToArray()),
            ["seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 1),
        };
        File.WriteAllText(context.OutputFile("metrics"), metrics.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"{input.StudentSteps}-step student from {prompts.Count * input.Trajectories} trajectories: loss {losses[^1].Loss:F4} in {watch.Elapsed.TotalSeconds:F0} s");
        return Task.CompletedTask;
    }
}

/// <summary>Diversity distillation's hybrid sampler, and its reverse as the control.</summary>
[Activity("diffusion.hybrid", Version = 1, Category = "Diffusion", Resources = ["gpu"], Summary = "Hybrid inference (diversity distillation): the base model until the distilled schedule's hand-off timestep, the distilled student after it; reverse: the student first (the control)")]
[Output("images", ArtifactKinds.Images, Help = "images.safetensors, samples.json and grid.png", MediaType = "inode/directory", FileName = "images", IsDirectory = true)]
public sealed class DiffusionHybridActivity : Activity<DiffusionHybridActivity.Input>
{
    public sealed record Input
    {
        [Input("The base model", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Base { get; init; }

        [Input("The distilled student", Kind = ArtifactKinds.DiffusionModel)]
        public required Artifact Student { get; init; }

        [Input("The toy scorer (optional)", Kind = ArtifactKinds.Scorer)]
        public Artifact? Scorer { get; init; }

        [Input("Prompts (empty with a toy model: every colour × shape)")]
        public IReadOnlyList<string> Prompts { get; init; } = [];

        [Input("One more prompt, after the list (lets a workflow parameter give the prompt)")]
        public string? Prompt { get; init; }

        [Input("Images per prompt", Minimum = 1, Maximum = 1024)]
        public int Samples { get; init; } = 4;

        [Input("Seed (the same as diffusion.sample's gives the same starting noise per image)")]
        public long Seed { get; init; }

        [Input("The base model's DDIM steps (the hand-off is the base step nearest the student's timestep)", Minimum = 2, Maximum = 1000)]
        public int BaseSteps { get; init; } = 20;

        [Input("The base model's guidance")]
        public double BaseGuidance { get; init; } = 3.0;

        [Input("The student's steps (as distilled)", Minimum = 2, Maximum = 8)]
        public int StudentSteps { get; init; } = 4;

        [Input("Student steps the base replaces (1: the paper's best trade-off)", Minimum = 1, Maximum = 7)]
        public int Handoff { get; init; } = 1;

        [Input("The control: the student runs first and the base finishes")]
        public bool Reverse { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        using var baseModel = DiffusionArtifacts.Open(input.Base, "base");
        using var student = DiffusionArtifacts.Open(input.Student, "student");
        using var scorer = DiffusionArtifacts.OpenScorer(input.Scorer);
        if (baseModel.DefaultSize != student.DefaultSize || baseModel.Unet.Config.InChannels != student.Unet.Config.InChannels)
        {
            throw new ActivityException("student: its image size or channels differ from the base model's; distil the student from this base");
        }
        var rows = DiffusionArtifacts.Rows(DiffusionArtifacts.Prompts(input.Prompts, input.Prompt, baseModel), input.Samples, input.Seed);
        var watch = Stopwatch.StartNew();
        var parts = new List<Tensor>();
        SamplerPlan? plan = null;
        try
        {
            var done = 0;
            foreach (var chunk in rows.Chunk(64))
            {
                // Each chunk's noise comes from the rows' own seeds, as diffusion.sample's.
                var (img, p) = HybridSampler.Sample(baseModel, student, chunk.Select(r => r.Prompt).ToList(), chunk[0].Seed, input.BaseSteps, input.BaseGuidance, input.StudentSteps, input.Handoff, input.Reverse,
                    context.CancellationToken, DiffusionArtifacts.Noise(baseModel, chunk, baseModel.DefaultSize));
                parts.Add(img);
                plan = p;
                done += chunk.Length;
                context.Report((double)done / rows.Count, $"{done}/{rows.Count} images");
            }
        }
        catch (ArgumentException e)
        {
            throw new ActivityException($"inputs: {e.Message}");
        }
        using var images = cat(parts, 0);
        foreach (var p in parts)
        {
            p.Dispose();
        }
        var set = ImageSet.Build(plan!.Name, plan.Description, plan.UnetCalls, rows, images, scorer, ToyDiffusionTrainer.WorldOf(baseModel), watch.Elapsed.TotalSeconds);
        set.Write(context.OutputDirectory("images"), images);
        context.Log($"{plan.Name}: {plan.Description}; {plan.UnetCalls} UNet calls per image" + (set.FidelityShape is null ? "" : $"; fidelity shape {ImageSet.Percent(set.FidelityShape)}, colour {ImageSet.Percent(set.FidelityColour)}"));
        return Task.CompletedTask;
    }
}

/// <summary>Diversity, fidelity and cost of image sets on the scorer's features.</summary>
[Activity("diffusion.diversity", Version = 1, Category = "Diffusion", Summary = "Sample diversity (mean pairwise 1 − cos of scorer features, per prompt), Fréchet distance to real images of the prompted factors, fidelity and cost per image set")]
[Output("table", ArtifactKinds.Json, Help = "pipelines.diversity/1: per set the sampler, cost, fidelity, diversity (mean and per prompt) and Fréchet distance", MediaType = "application/json", FileName = "diversity.json")]
[Output("plot", ArtifactKinds.Plot, Help = "Diversity per prompt and set", MediaType = "image/png", FileName = "diversity.png")]
public sealed class DiffusionDiversityActivity : Activity<DiffusionDiversityActivity.Input>
{
    public sealed record Input
    {
        [Input("Image sets (diffusion.sample, diffusion.hybrid)", Kind = ArtifactKinds.Images)]
        public required IReadOnlyList<Artifact> Sets { get; init; }

        [Input("The toy scorer whose 64-d features measure diversity", Kind = ArtifactKinds.Scorer)]
        public required Artifact Scorer { get; init; }

        [Input("Real images per prompt for the Fréchet reference (drawn by the toy world with the prompted factors)", Minimum = 2, Maximum = 4096)]
        public int Reference { get; init; } = 64;

        [Input("Seed of the reference images")]
        public long Seed { get; init; } = 77;
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (input.Sets.Count == 0)
        {
            throw new ActivityException("inputs.sets: connect at least one image set");
        }
        using var scorer = DiffusionArtifacts.OpenScorer(input.Scorer)!;
        var world = new ToyWorld(scorer.Side, scorer.Side == 32);
        var table = new JsonArray();
        var series = new List<(string, IReadOnlyList<double?>)>();
        List<string>? promptOrder = null;
        using var noGrad = no_grad();
        foreach (var (artifact, i) in input.Sets.Select((a, i) => (a, i)))
        {
            var set = ImageSet.Read(artifact.Path, $"sets[{i}]");
            using var images = ImageSet.ReadImages(artifact.Path, $"sets[{i}]");
            if (images.shape[2] != scorer.Side)
            {
                throw new ActivityException($"sets[{i}]: {images.shape[2]} px images, but the scorer reads {scorer.Side} px");
            }
            using var scope = NewDisposeScope();
            var features = scorer.Forward(images).Features;
            var prompts = set.Prompts;
            promptOrder ??= prompts.ToList();
            var perPrompt = new JsonObject();
            var values = new Dictionary<string, double>();
            var r = new SeededRandom(input.Seed);
            var reference = new List<Tensor>();
            foreach (var p in prompts)
            {
                var idx = tensor(set.Samples.Select((s, k) => (s, k)).Where(x => x.s.Prompt == p).Select(x => (long)x.k).ToArray());
                var d = Diversity.MeanPairwiseDistance(features.index_select(0, idx));
                values[p] = d;
                perPrompt[p] = Math.Round(d, 5);
                var (shape, colour, _) = ToyWorld.Parse(p);
                var items = Enumerable.Range(0, input.Reference).Select(_ => world.RandomItem(r, shape >= 0 ? shape : null, colour >= 0 ? colour : null)).ToList();
                reference.Add(scorer.Forward(world.Render(items, r)).Features);
            }
            var fd = Diversity.Frechet(features, cat(reference, 0));
            var mean = values.Values.Average();
            table.Add(new JsonObject
            {
                ["sampler"] = set.Sampler, ["description"] = set.Description, ["unetCalls"] = set.UnetCalls, ["secondsPerImage"] = Math.Round(set.Seconds / Math.Max(1, set.Samples.Count), 4),
                ["images"] = set.Samples.Count, ["fidelityShape"] = set.FidelityShape, ["fidelityColour"] = set.FidelityColour,
                ["diversity"] = Math.Round(mean, 5), ["frechet"] = Math.Round(fd, 4), ["perPrompt"] = perPrompt,
            });
            series.Add((set.Sampler, promptOrder.Select(p => values.TryGetValue(p, out var v) ? (double?)v : null).ToList()));
            context.Log($"{set.Sampler}: diversity {mean:F4}, Fréchet {fd:F3}, fidelity shape {ImageSet.Percent(set.FidelityShape)}, {set.UnetCalls} UNet calls per image");
        }
        var acc = scorer.Evaluate(world);
        var doc = new JsonObject
        {
            ["format"] = "pipelines.diversity/1", ["metric"] = "mean over ordered pairs of 1 − cos of L2-normalised scorer features (64-d), per prompt, averaged over prompts",
            ["scorer"] = new JsonObject { ["shape"] = acc.Shape, ["colour"] = acc.Colour, ["sizeCorrelation"] = Math.Round(acc.SizeCorrelation, 4) }, ["sets"] = table,
        };
        File.WriteAllText(context.OutputFile("table"), doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        Causal.GridPlot.Curves(context.OutputFile("plot"), promptOrder!, series, "Sample diversity per prompt", "mean pairwise 1 − cos");
        return Task.CompletedTask;
    }
}
