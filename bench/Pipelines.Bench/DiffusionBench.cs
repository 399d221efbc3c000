using System.Diagnostics;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Bench;

/// <summary>
/// The diffusion runtime's costs in one run: UNet forward throughput (samples/s) at the toy's 16 and 32 px and at
/// SD-1.x's shape (one 64×64 latent, 77 context tokens, random weights), each as a fraction of the machine's bare
/// 1024³ matmul and 3×3 conv rates measured now; the MACs are counted during the forward (linear, conv and attention
/// products). Then the toy's sampling time per image (50 DDIM steps with guidance) and the peak memory added per sample.
/// Usage: dotnet run -c Release --project bench/Pipelines.Bench -- diffusion [--no-sd]
/// </summary>
public static class DiffusionBench
{
    public static int Run(string[] args)
    {
        TorchRuntime.EnsureLoaded();
        using var noGrad = no_grad();
        double Best(Action a, int repeats)
        {
            var best = double.MaxValue;
            for (var r = 0; r <= repeats; r++)
            {
                using var scope = NewDisposeScope();
                var clock = Stopwatch.StartNew();
                a();
                best = r == 0 ? best : Math.Min(best, clock.Elapsed.TotalSeconds); // the first run warms up
            }
            return best;
        }
        using var a = randn(1024, 1024);
        using var b = randn(1024, 1024);
        var matmulRate = 2.0 * 1024 * 1024 * 1024 / Best(() => matmul(a, b), 10);
        using var cx = randn(32, 64, 32, 32);
        using var cw = randn(64, 64, 3, 3);
        var convRate = 2.0 * 32 * 64 * 32 * 32 * 64 * 9 / Best(() => nn.functional.conv2d(cx, cw, padding: [1, 1]), 5);
        Console.WriteLine($"bare rates now: matmul 1024³ {matmulRate / 1e9:F1} GFLOP/s, conv 3×3 64→64 at 32×32 ×32 {convRate / 1e9:F1} GFLOP/s");
        Console.WriteLine();
        Console.WriteLine("| UNet | batch | MMAC / sample | samples/s | GFLOP/s | of matmul | of conv |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        foreach (var side in new[] { 16, 32 })
        {
            var world = new ToyWorld(side, side == 32);
            using var pipe = ToyDiffusionTrainer.Create(world, 1);
            const int batch = 32;
            using var x = randn(batch, 3, side, side);
            using var ctx = randn(batch, ToyDiffusionTrainer.ContextLength, 32);
            using var t = tensor(500);
            var macs = MacCounter.Measure(() => { using var s = NewDisposeScope(); pipe.Unet.Forward(x, t, ctx); }) / batch;
            var seconds = Best(() => pipe.Unet.Forward(x, t, ctx), 5);
            Row($"toy {side} px", batch, macs, batch / seconds);
        }
        if (!args.Contains("--no-sd"))
        {
            using var unet = new UNet2DConditionModel(KnownConfigs.StableDiffusionUNet);
            DiffusionInit.Reset(unet, 0);
            unet.eval();
            using var x = randn(1, 4, 64, 64);
            using var ctx = randn(1, 77, 768);
            using var t = tensor(981);
            var before = ResetPeak();
            var macs = MacCounter.Measure(() => { using var s = NewDisposeScope(); unet.Forward(x, t, ctx); });
            var seconds = Best(() => unet.Forward(x, t, ctx), 1);
            Row("SD-1.x (64×64 latent)", 1, macs, 1 / seconds);
            Console.WriteLine();
            Console.WriteLine($"SD-1.x: one UNet call {seconds:F1} s, so a 50-step guided image ≈ {100 * seconds / 60:F1} min on this machine; peak memory during the call +{(PeakRss() - before) / 1048576.0:F0} MiB over the {unet.parameters().Sum(p => p.numel()) * 4 / 1048576.0:F0} MiB of weights");
        }
        {
            using var pipe = ToyDiffusionTrainer.Create(new ToyWorld(16), 2);
            var prompts = ToyWorld.ColourShapePrompts().Select(p => p.Prompt).ToList();
            var before = ResetPeak();
            var seconds = Best(() => pipe.Sample(new SampleRequest { Prompts = prompts, Steps = 50, Guidance = 3, Scheduler = "ddim" }), 2);
            var added = PeakRss() - before;
            Console.WriteLine($"toy 16 px sampling: 50 DDIM steps with guidance, {prompts.Count} images per batch: {seconds / prompts.Count * 1000:F1} ms per image; peak memory +{added / 1048576.0 / prompts.Count:F2} MiB per sample");
        }
        return 0;

        void Row(string name, int batch, long macs, double samplesPerSecond)
        {
            var flops = 2.0 * macs * samplesPerSecond;
            Console.WriteLine($"| {name} | {batch} | {macs / 1e6:F1} | {samplesPerSecond:F2} | {flops / 1e9:F1} | {flops / matmulRate:F2} | {flops / convRate:F2} |");
        }
    }

    /// <summary>Resets the kernel's peak-RSS mark (VmHWM) to the current RSS, so the next peak is this section's.</summary>
    internal static long ResetPeak()
    {
        File.WriteAllText("/proc/self/clear_refs", "5");
        return Rss("VmRSS:");
    }

    internal static long PeakRss() => Rss("VmHWM:");

    internal static long Rss(string key)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
        {
            if (line.StartsWith(key, StringComparison.Ordinal))
            {
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
            }
        }
        return 0;
    }
}
