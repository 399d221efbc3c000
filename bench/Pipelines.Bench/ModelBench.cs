using System.Diagnostics;
using Pipelines.Models.Generation;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Bench;

/// <summary>
/// Model runtime ratios on a GPT-2-small-shaped random model, all measured in one run:
/// forward and forward+backward FLOP rates as a fraction of the bare matmul rate, decode speed with and without
/// the KV cache, and memory per token. Usage: dotnet run -c Release --project bench/Pipelines.Bench -- models [--tokens 64]
/// </summary>
public static class ModelBench
{
    public static int Run(string[] args)
    {
        TorchRuntime.EnsureLoaded();
        var tokens = args.Length > 1 && args[0] == "--tokens" ? int.Parse(args[1]) : 64;
        var config = new TransformerConfig
        {
            Architecture = "gpt2", DModel = 768, NLayers = 12, NHeads = 12, DMlp = 3072, DVocab = 50257, NCtx = 1024, TiedEmbeddings = false,
        };
        using var model = new HookedTransformer(config).InitWeights(0);
        using var input = randint(0, config.DVocab, [1, tokens], dtype: ScalarType.Int64);

        // The bare matmul rate on this machine, now.
        using var a = randn(1024, 1024);
        using var b = randn(1024, 1024);
        var matmulSeconds = Time(10, () => { using var c = matmul(a, b); });
        var peak = 2.0 * 1024 * 1024 * 1024 / matmulSeconds;

        // FLOPs of one forward: 2 × (non-embedding weights + unembedding) per token, plus attention scores and mixing.
        var perToken = 2.0 * (config.NLayers * (4.0 * config.DModel * config.DModel + 2.0 * config.DModel * config.DMlp) + config.DModel * config.DVocab);
        var attention = 2.0 * 2 * config.NLayers * tokens * (double)tokens * config.DModel;
        var forwardFlops = perToken * tokens + attention;

        double forward;
        using (no_grad())
        {
            forward = Time(5, () => { using var l = model.Forward(input); });
        }
        var backward = Time(3, () =>
        {
            using var scope = NewDisposeScope();
            model.zero_grad();
            model.Forward(input)[0, -1].logsumexp(0).backward();
        });

        var words = new WordLevelTokenizer(Enumerable.Range(0, config.DVocab).ToDictionary(i => $"t{i}", i => i), "t0", null, null, 0);
        var prompt = string.Join(' ', Enumerable.Range(0, 32).Select(i => $"t{(i * 977) % config.DVocab}"));
        var generator = new TextGenerator(model, words);
        const int newTokens = 32;
        generator.Generate([prompt], new GenerationOptions { MaxNewTokens = 2, StopAtEos = false }); // warm-up
        var cached = Time(1, () => generator.Generate([prompt], new GenerationOptions { MaxNewTokens = newTokens, StopAtEos = false }));
        var uncached = Time(1, () => generator.Generate([prompt], new GenerationOptions { MaxNewTokens = newTokens, StopAtEos = false, UseKvCache = false }));

        long kvBytes;
        using (var cache = new KvCache(config.NLayers))
        using (no_grad())
        {
            using var l = model.Forward(input, cache: cache);
            kvBytes = (long)config.NLayers * 2 * cache.Length * config.KvHeads * config.HeadDim * 4;
        }
        long activationBytes;
        var (logits, acts) = model.RunWithCache(input);
        using (logits)
        using (acts)
        {
            activationBytes = acts.Names.Sum(n => acts[n].numel() * acts[n].ElementSize);
        }

        Console.WriteLine($"Model runtime: GPT-2-small shape ({config.ParameterCount() / 1e6:F0}M parameters, f32), batch 1 × {tokens} tokens, {get_num_threads()} threads, allocator {TorchRuntime.Allocator}");
        Console.WriteLine();
        Console.WriteLine("| measure | value | ratio |");
        Console.WriteLine("|---|---|---|");
        Console.WriteLine($"| bare matmul 1024³ f32 | {peak / 1e9:F0} GFLOP/s | 1.00 (reference) |");
        Console.WriteLine($"| forward | {tokens / forward:F0} tok/s, {forwardFlops / forward / 1e9:F0} GFLOP/s | {forwardFlops / forward / peak:F2} of matmul rate |");
        Console.WriteLine($"| forward + backward | {tokens / backward:F0} tok/s, {3 * forwardFlops / backward / 1e9:F0} GFLOP/s | {3 * forwardFlops / backward / peak:F2} of matmul rate (3× forward FLOPs) |");
        Console.WriteLine($"| decode with KV cache (32 → 64 tokens) | {newTokens / cached:F1} tok/s | {uncached / cached:F1}× faster than without |");
        Console.WriteLine($"| decode without KV cache | {newTokens / uncached:F1} tok/s | 1.00 |");
        Console.WriteLine($"| KV cache per token | {kvBytes / (double)tokens / 1024:F0} KiB | 2 × layers × kv heads × d_head × 4 B |");
        Console.WriteLine($"| all hook activations per token (RunWithCache) | {activationBytes / (double)tokens / 1024:F0} KiB | {(double)activationBytes / kvBytes:F1}× the KV cache |");
        return 0;
    }

    private static double Time(int reps, Action action)
    {
        action();
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < reps; i++)
        {
            action();
        }
        return clock.Elapsed.TotalSeconds / reps;
    }
}
