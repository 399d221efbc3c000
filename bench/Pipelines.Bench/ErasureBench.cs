using System.Diagnostics;
using Pipelines.Activities.Erasure;
using Pipelines.Models.Runtime;
using Pipelines.Models.Training;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Bench;

/// <summary>
/// The erasure battery's cost, measured in one run: each probe's seconds over the seconds of one batched B′ forward
/// pass over the held-out questions (the least work any probe does), for the erasure-probe workflow's shapes (the
/// concept world of seed 0, 100 held-out questions, 2 layers, d = 128). Random weights: the probes do the same work
/// as on trained ones, except that answers may stop earlier at EOS. Also the process's peak memory.
/// Usage: dotnet run -c Release --project bench/Pipelines.Bench -- erasure
/// </summary>
public static class ErasureBench
{
    public static int Run(string[] args)
    {
        _ = args;
        TorchRuntime.EnsureLoaded();
        var world = ConceptWorld.Generate(0);
        var tokenizer = world.Tokenizer();
        var options = new ChatTrainingOptions { DModel = 128, DMlp = 512, NLayers = 2, NHeads = 4 };
        var config = ChatTrainer.ModelConfig(options, tokenizer.Vocabulary.Count, tokenizer);
        using var b = new HookedTransformer(config).InitWeights(1);
        using var erased = new HookedTransformer(config).InitWeights(2);
        var data = ConceptData.FromWorld(world, "volcanoes");
        var settings = new BatterySettings { Questions = 100, Seed = 0 };
        var kit = new ProbeKit(erased, tokenizer);
        var prompts = data.HeldOut(100).Select(q => kit.Ids(data.Ask(q))).ToList();
        double Forward()
        {
            var best = double.MaxValue;
            for (var r = 0; r < 6; r++)
            {
                using var _ = no_grad();
                using var scope = NewDisposeScope();
                var clock = Stopwatch.StartNew();
                erased.Forward(kit.Padded(prompts));
                best = r == 0 ? best : Math.Min(best, clock.Elapsed.TotalSeconds);
            }
            return best;
        }
        var unit = Forward();
        var battery = new ErasureBattery(new ProbeKit(b, tokenizer), kit, data, settings,
            () => new HookedTransformer(config).InitWeights(1), () => new HookedTransformer(config).InitWeights(2));
        var clock = Stopwatch.StartNew();
        var results = battery.Run(ErasureBattery.AllProbes).ToList();
        var total = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"One batched forward of B′ over {prompts.Count} held-out questions: {unit * 1000:F1} ms (best of 5).");
        Console.WriteLine("| probe | family | seconds | × one forward |");
        Console.WriteLine("|---|---|---|---|");
        foreach (var r in results)
        {
            var seconds = r.Details["seconds"]!.GetValue<double>();
            Console.WriteLine($"| {r.Probe} | {r.Family} | {seconds:F2} | {seconds / unit:F0} |");
        }
        foreach (var family in results.GroupBy(r => r.Family))
        {
            Console.WriteLine($"family {family.Key}: {family.Sum(r => r.Details["seconds"]!.GetValue<double>()):F1} s");
        }
        Console.WriteLine($"whole battery: {total:F1} s = {total / unit:F0} forwards; peak working set {Process.GetCurrentProcess().PeakWorkingSet64 / (1024.0 * 1024):F0} MiB");
        return 0;
    }
}
