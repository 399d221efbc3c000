using System.Diagnostics;
using System.Text.Json.Nodes;
using Pipelines.Activities.Erasure;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Bench;

/// <summary>
/// Issue 17's benchmark, in one run on the concept-erasure and sliderspace workflows' shapes (the 16 px toy, random
/// weights: every probe and slider does the same work as on trained models, since the searches and samplers run fixed
/// counts). (1) The cost of the full diffusion battery per erasure method relative to one standard-probe pass, as a
/// workflow pays it: B's side of each probe is computed once (a warm-up battery with B′ = B) and cached, so each
/// method pays its B′ side and its dynamics (the workflow's checkpoint counts: ESD 150/25 → 6, GA 50/10 → 5, UCE none).
/// (2) SliderSpace discovery time per slider (the workflow's defaults: 256 samples, 300 iterations, 4 sliders).
/// Usage: dotnet run -c Release --project bench/Pipelines.Bench -- diffusion-erasure [--methods esd-x,esd-u,uce,ga] [--no-sliders]
/// </summary>
public static class DiffusionErasureBench
{
    public static int Run(string[] args)
    {
        TorchRuntime.EnsureLoaded();
        var methodsArg = Array.IndexOf(args, "--methods") is var mi and >= 0 && mi + 1 < args.Length ? args[mi + 1] : "esd-x,esd-u,uce,ga";
        var methods = methodsArg.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var world = new ToyWorld(16);
        using var baseModel = ToyDiffusionTrainer.Create(world, 1);
        using var scorer = new ToyScorer(16);
        DiffusionInit.Reset(scorer, 3);
        scorer.eval();
        var concept = ToyConcept.Parse("red");
        // concept-erasure.json's probe settings: 4 seeds per prompt, 20 DDIM steps, the activity's other defaults.
        var settings = new DiffusionBatterySettings { SeedsPerPrompt = 4, Steps = 20, Seed = 0 };
        var probes = DiffusionBattery.AllProbes;
        var root = Path.Combine(Path.GetTempPath(), "pipelines-bench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        Console.WriteLine($"Diffusion erasure battery: toy 16 px, random weights, concept \"{concept.Name}\", {settings.SeedsPerPrompt} seeds × {concept.Prompts().Count} prompts, {settings.Steps} DDIM steps, {get_num_threads()} threads, one run");
        try
        {
            // Warm-up and B's side: the battery with B′ = B (what the workflow's probeBase step and first method pay).
            var baseSeconds = Battery(baseModel, null);
            Console.WriteLine($"B's side, computed once per workflow (battery with B′ = B, both sides): {baseSeconds.Sum(p => p.Value):F1} s");
            Console.WriteLine();
            Console.WriteLine("| method | B′ battery (s) | standard probe (s) | dynamics (checkpoints, s) | battery ÷ standard probe |");
            Console.WriteLine("|---|---|---|---|---|");
            foreach (var method in methods)
            {
                using var erased = Distillation.Clone(baseModel, baseModel.SchedulerConfig, baseModel.Extra.DeepClone().AsObject());
                var checkpoints = Path.Combine(root, method);
                var count = Erase(method, erased, baseModel, concept, checkpoints);
                var seconds = Battery(erased, count > 0 ? checkpoints : null);
                var dynamics = seconds.GetValueOrDefault("dynamics");
                var total = seconds.Sum(p => p.Value);
                Console.WriteLine($"| {method} | {total:F1} | {seconds["standard"]:F2} | {count}: {dynamics:F1} | {total / seconds["standard"]:F0} × |");
            }
            Console.WriteLine();
            Console.WriteLine("Per probe (the last method's B′ side, seconds): " + string.Join(", ", LastProbes.Select(p => $"{p.Key} {p.Value:F1}")));
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
        if (!args.Contains("--no-sliders"))
        {
            var o = new SliderSpaceOptions();
            var clock = Stopwatch.StartNew();
            var result = Sliders.Discover(baseModel, scorer, "circle", o);
            var seconds = clock.Elapsed.TotalSeconds;
            result.Sliders.ToList().ForEach(s => s.Dispose());
            result.Components.Dispose();
            Console.WriteLine();
            Console.WriteLine($"SliderSpace discovery (sliderspace.json's defaults: {o.Samples} samples × {o.SampleSteps} DDIM steps, {o.Iterations} iterations, {o.PerIteration} sliders per iteration, {o.Sliders} sliders): {seconds:F1} s in all, {seconds / o.Sliders:F1} s per slider");
        }
        return 0;

        Dictionary<string, double> Battery(DiffusionPipeline erased, string? checkpoints)
        {
            var seconds = new Dictionary<string, double>();
            var battery = new DiffusionBattery(baseModel, erased, scorer, concept, settings, baseKey: "bench");
            var clock = Stopwatch.StartNew();
            foreach (var r in battery.Run(probes))
            {
                seconds[r.Probe] = clock.Elapsed.TotalSeconds;
                clock.Restart();
            }
            if (checkpoints is not null)
            {
                clock.Restart();
                foreach (var (_, path) in ErasureCheckpoints.List(checkpoints))
                {
                    using var model = Distillation.Clone(baseModel, baseModel.SchedulerConfig, new JsonObject());
                    ErasureCheckpoints.Apply(model.Unet, path);
                    DiffusionBattery.Point(model, baseModel, scorer, concept, settings);
                }
                seconds["dynamics"] = clock.Elapsed.TotalSeconds;
            }
            LastProbes = seconds;
            return seconds;
        }
    }

    private static Dictionary<string, double> LastProbes = [];

    /// <summary>Erases with the workflow's settings (training shortened: its cost is not the battery's), saving the workflow's number of checkpoints.</summary>
    private static int Erase(string method, DiffusionPipeline erased, DiffusionPipeline frozen, ToyConcept concept, string checkpoints)
    {
        var saved = 0;
        switch (method)
        {
            case "esd-x" or "esd-u":
            {
                var trained = ConceptErasure.Select(erased.Unet, method).Select(p => p.Name).ToList();
                ConceptErasure.Esd(erased, frozen, concept.Prompts(), new EsdOptions { Parameters = method, Iterations = 6, BatchSize = 2, Steps = 4 }, onCheckpoint: step =>
                {
                    ErasureCheckpoints.Save(erased.Unet, trained, Path.Combine(checkpoints, $"step-{step:D6}"));
                    saved++;
                });
                break;
            }
            case "uce":
                ConceptErasure.Uce(erased, concept.Prompts(), Enumerable.Repeat("", concept.Prompts().Count).ToList(), concept.OtherPrompts(), new UceOptions { TokenRule = "through-end" });
                break;
            case "ga":
            {
                var sampler = new DiffusionBattery(frozen, frozen, null!, concept, new DiffusionBatterySettings { SeedsPerPrompt = 1, Steps = 4 });
                var rows = concept.Prompts().Select(p => (p, 0L)).ToList();
                Tensor images;
                using (no_grad())
                {
                    images = frozen.Decode(sampler.Sample(frozen, rows));
                }
                using var _ = images;
                var names = erased.Unet.named_parameters().Select(p => p.name).ToList();
                ConceptErasure.GradientAscent(erased, images, rows.Select(r => r.p).ToList(), null, null, new GradientAscentOptions { Iterations = 5, BatchSize = 2 }, onCheckpoint: step =>
                {
                    ErasureCheckpoints.Save(erased.Unet, names, Path.Combine(checkpoints, $"step-{step:D6}"));
                    saved++;
                });
                break;
            }
            default:
                throw new ArgumentException($"unknown method \"{method}\" (esd-x, esd-u, uce, ga)");
        }
        return saved;
    }
}
