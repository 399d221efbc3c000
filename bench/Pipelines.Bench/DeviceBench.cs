using System.Diagnostics;
using Pipelines.Activities.Circuits;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Generation;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Bench;

/// <summary>
/// The device check (scripts/device-check.sh runs it from a self-contained publish pointed at an installed libtorch):
/// which libtorch loaded and which device answers; then, on that device against the CPU, on a random GPT-2-shaped
/// checkpoint written in HF's format and read back by the real loader: logits parity, fused EAP scores parity, EAP and
/// EAP-IG time over their bare passes, and decode tokens/s at batch 1 and 32. On a machine without CUDA every figure is
/// computed on the CPU against itself, so the script runs end to end anywhere.
/// Usage: ... -- device [--layers 12] [--rounds 3]
/// </summary>
public static class DeviceBench
{
    public static int Run(string[] args)
    {
        int Arg(string name, int fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback;
        TorchRuntime.EnsureLoaded();
        var device = TorchRuntime.DefaultDevice();
        var cuda = device.type == TorchSharp.DeviceType.CUDA;
        Console.WriteLine($"libtorch loaded: TorchSharp built for libtorch {TorchRuntime.TorchVersion}, backend {TorchRuntime.Backend}, CUDA available: {cuda}, computing on {device}");
        var config = new TransformerConfig
        {
            Architecture = "gpt2", DModel = 768, NLayers = Arg("--layers", 12), NHeads = 12, DMlp = 3072, DVocab = 50257, NCtx = 1024, TiedEmbeddings = false,
        };
        var dir = Path.Combine(Path.GetTempPath(), "pipelines-device-check-" + Guid.NewGuid().ToString("N")[..8]);
        var failures = 0;
        try
        {
            using (var written = new HookedTransformer(config).InitWeights(0))
            {
                Checkpoint.Save(written, dir);
            }
            using var cpu = Checkpoint.Load(dir);
            using var gpu = Checkpoint.Load(dir, new LoadOptions { Device = cuda ? device : null });
            const int batch = 4, tokens = 32;
            using var clean = randint(0, config.DVocab, [batch, tokens], dtype: ScalarType.Int64);
            using var corrupted = clean.clone();
            corrupted[.., tokens / 2] = randint(0, config.DVocab, [batch], dtype: ScalarType.Int64);
            static Tensor Loss(Tensor logits) => logits[.., -1, 0].to(ScalarType.Float32).mean();

            // Logits parity.
            using (no_grad())
            {
                using var scope = NewDisposeScope();
                var a = cpu.Forward(clean);
                var b = gpu.Forward(clean.to(device)).cpu();
                var error = ((a - b).abs().max() / a.abs().max()).item<float>();
                var ok = error < 1e-3;
                failures += ok ? 0 : 1;
                Console.WriteLine($"logits parity ({batch} × {tokens} tokens): max |Δ| / max |logit| = {error:E2} ({(ok ? "ok" : "FAIL")}, tolerance 1e-3: TF32 and reduction order differ)");
            }

            // Fused EAP parity.
            {
                using var scope = NewDisposeScope();
                var graph = ComputationGraph.For(config);
                var a = new EdgeAttribution(cpu, graph).Eap(clean, corrupted, Loss);
                var b = new EdgeAttribution(gpu, graph).Eap(clean.to(device), corrupted.to(device), Loss).cpu();
                var (rho, top) = ScoreAgreement.Compare(a, b, 100);
                var ok = rho > 0.999 && top < 0.02;
                failures += ok ? 0 : 1;
                Console.WriteLine($"fused EAP parity ({graph.EdgeCount:N0} edges): Spearman ρ of |scores| {rho:F5}, largest relative error among the top 100 edges {top:P2} ({(ok ? "ok" : "FAIL")}: ρ > 0.999 and < 2 %)");
            }

            // Attribution over its bare passes, on the device.
            {
                var rounds = Arg("--rounds", 3);
                var graph = ComputationGraph.For(config);
                var attribution = new EdgeAttribution(gpu, graph);
                using var c = clean.to(device);
                using var k = corrupted.to(device);
                double Once(Action a)
                {
                    using var scope = NewDisposeScope();
                    Sync();
                    var clock = Stopwatch.StartNew();
                    a();
                    Sync();
                    return clock.Elapsed.TotalSeconds;
                }
                void Forward() { using var _ = no_grad(); gpu.Forward(k); }
                void ForwardBackward()
                {
                    using var frozen = new FrozenWeights(gpu);
                    using (gpu.Hook("hook_embed").Add((x, _) => x.detach().requires_grad_(true)))
                    {
                        Loss(gpu.Forward(c)).backward();
                    }
                }
                var methods = new (string Name, int Passes, Action Run)[]
                {
                    ("EAP", 1, () => attribution.Eap(c, k, Loss)),
                    ("EAP-IG-inputs m = 5", 5, () => attribution.EapIgInputs(c, k, Loss, 5)),
                };
                Once(Forward);
                Once(ForwardBackward);
                foreach (var m in methods)
                {
                    Once(m.Run);
                }
                foreach (var m in methods)
                {
                    var ratios = Enumerable.Range(0, rounds).Select(_ =>
                    {
                        var f = Once(Forward);
                        var fb = Once(ForwardBackward);
                        return Once(m.Run) / (f + m.Passes * fb);
                    }).Order().ToList();
                    Console.WriteLine($"{m.Name} on {device}: {ratios[ratios.Count / 2]:F2} × its bare passes (median of {rounds})");
                }
            }

            // Decode tokens/s on the device.
            {
                var words = new WordLevelTokenizer(Enumerable.Range(0, config.DVocab).ToDictionary(i => $"t{i}", i => i), "t0", null, null, 0);
                var generator = new TextGenerator(gpu, words);
                var prompts = Enumerable.Range(0, 32).Select(p => string.Join(' ', Enumerable.Range(0, 32).Select(i => $"t{(i * 977 + p * 31) % config.DVocab}"))).ToList();
                const int newTokens = 32;
                generator.Generate(prompts.Take(2).ToList(), new GenerationOptions { MaxNewTokens = 2, StopAtEos = false });
                foreach (var n in new[] { 1, 32 })
                {
                    Sync();
                    var clock = Stopwatch.StartNew();
                    generator.Generate(prompts.Take(n).ToList(), new GenerationOptions { MaxNewTokens = newTokens, StopAtEos = false });
                    Sync();
                    Console.WriteLine($"decode on {device}, batch {n}: {n * newTokens / clock.Elapsed.TotalSeconds:F0} tokens/s");
                }
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
        Console.WriteLine(failures == 0 ? "device check: passed" : $"device check: {failures} parity check(s) FAILED");
        return failures == 0 ? 0 : 1;

        void Sync()
        {
            if (cuda)
            {
                TorchSharp.torch.cuda.synchronize();
            }
        }
    }
}
