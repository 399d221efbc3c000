using System.Diagnostics;
using Pipelines.Activities.Circuits;
using Pipelines.Activities.Crawl;
using Pipelines.Models.Generation;
using Pipelines.Models.Runtime;
using Pipelines.Models.Training;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Bench;

/// <summary>
/// Issue 18's figures, each beside its target, from one run on this machine: the GPT-2-small shape's forward and
/// forward+backward FLOP rates over the bare matmul rate (batch 4 × 64); EAP and EAP-IG time over their bare passes on
/// the path workflows take (fused); bf16 on CPU (matmul rate, forward speed-up, EAP-IG speed-up and its score error
/// against f32: Spearman correlation of |scores| and the top edges' largest relative error); memory (the Δ store per
/// example, EAP-IG's peak per example); batched decode on the toy chat model (batch 32 over batch 1); the toy UNet's
/// samples/s over the conv rate. Usage: dotnet run -c Release --project bench/Pipelines.Bench -- performance [--rounds 3]
/// </summary>
public static class PerformanceBench
{
    private static readonly List<(string Measure, string Value, string Target)> Rows = [];

    public static int Run(string[] args)
    {
        TorchRuntime.EnsureLoaded();
        int Arg(string name, int fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback;
        var rounds = Arg("--rounds", 3);
        var sections = args.Where(a => !a.StartsWith("--", StringComparison.Ordinal) && !int.TryParse(a, out _)).ToHashSet();
        bool On(string s) => sections.Count == 0 || sections.Contains(s);
        Console.WriteLine($"Performance (issue 18): {get_num_threads()} threads, allocator {TorchRuntime.Allocator}, one run");

        var f32Rate = MatmulRate(ScalarType.Float32);
        var bf16Rate = MatmulRate(ScalarType.BFloat16);
        Rows.Add(("bare matmul 1024³, f32", $"{f32Rate / 1e9:F0} GFLOP/s", "reference"));
        Rows.Add(("bare matmul 1024³, bf16 ÷ f32", $"{bf16Rate / f32Rate:F2} ×", "the CPU's bf16 instructions (3–4× on the dev machines)"));

        var config = new TransformerConfig { Architecture = "gpt2", DModel = 768, NLayers = 12, NHeads = 12, DMlp = 3072, DVocab = 50257, NCtx = 1024, TiedEmbeddings = false };
        if (On("model"))
        {
            Model(config, f32Rate, bf16Rate);
        }
        if (On("attribution"))
        {
            Attribution(config, rounds);
        }
        if (On("decode"))
        {
            Decode();
        }
        if (On("unet"))
        {
            Unet();
        }
        Console.WriteLine();
        Console.WriteLine("| measure | this run | target |");
        Console.WriteLine("|---|---|---|");
        foreach (var (measure, value, target) in Rows)
        {
            Console.WriteLine($"| {measure} | {value} | {target} |");
        }
        return 0;
    }

    private static double MatmulRate(ScalarType dtype)
    {
        using var a = randn(1024, 1024).to(dtype);
        using var b = randn(1024, 1024).to(dtype);
        return 2.0 * 1024 * 1024 * 1024 / Best(10, () => { using var c = matmul(a, b); });
    }

    /// <summary>The fastest of <paramref name="reps"/> calls after one untimed call.</summary>
    private static double Best(int reps, Action action)
    {
        using (NewDisposeScope())
        {
            action();
        }
        var best = double.MaxValue;
        for (var i = 0; i < reps; i++)
        {
            using var scope = NewDisposeScope();
            var clock = Stopwatch.StartNew();
            action();
            best = Math.Min(best, clock.Elapsed.TotalSeconds);
        }
        return best;
    }

    private static void Model(TransformerConfig config, double f32Rate, double bf16Rate)
    {
        const int batch = 4, tokens = 64;
        using var model = new HookedTransformer(config).InitWeights(0);
        using var input = randint(0, config.DVocab, [batch, tokens], dtype: ScalarType.Int64);
        var perToken = 2.0 * (config.NLayers * (4.0 * config.DModel * config.DModel + 2.0 * config.DModel * config.DMlp) + config.DModel * config.DVocab);
        var attention = 2.0 * 2 * config.NLayers * tokens * (double)tokens * config.DModel;
        var flops = batch * (perToken * tokens + attention);
        double Forward()
        {
            using var _ = no_grad();
            return Best(4, () => model.Forward(input));
        }
        double ForwardBackward() => Best(3, () =>
        {
            model.zero_grad();
            model.Forward(input)[.., -1].logsumexp(-1).sum().backward();
        });
        var forward = Forward();
        var backward = ForwardBackward();
        Rows.Add(($"forward, GPT-2-small shape, batch {batch} × {tokens}, f32", $"{flops / forward / f32Rate:F2} of the matmul rate ({batch * tokens / forward:F0} tok/s)", "≥ 0.70"));
        Rows.Add(("forward + backward (weights' gradients too), f32", $"{3 * flops / backward / f32Rate:F2} of the matmul rate", "≥ 0.60"));
        // Resident memory over a long loop: what the allocator settings cost (the heap keeps what it has used).
        var rss = new List<long>();
        for (var i = 1; i <= 100; i++)
        {
            using var scope = NewDisposeScope();
            model.zero_grad();
            model.Forward(input)[.., -1].logsumexp(-1).sum().backward();
            if (i % 25 == 0)
            {
                rss.Add(DiffusionBench.Rss("VmRSS:"));
            }
        }
        Rows.Add(("resident memory over 100 forward + backward passes (batch 4 × 64, f32), after 25, 50, 75, 100", string.Join(", ", rss.Select(r => $"{r / 1048576.0:F0}")) + " MiB", "no growth"));
        model.to(ScalarType.BFloat16);
        var forward16 = Forward();
        var backward16 = ForwardBackward();
        model.zero_grad();
        Rows.Add(("forward, bf16 weights and activations: speed-up over f32", $"{forward / forward16:F2} × ({flops / forward16 / bf16Rate:F2} of the bf16 matmul rate)", "bf16 where the CPU has it"));
        Rows.Add(("forward + backward, bf16: speed-up over f32", $"{backward / backward16:F2} ×", "bf16 where the CPU has it"));
    }

    private static void Attribution(TransformerConfig config, int rounds)
    {
        const int batch = 4, tokens = 32, m = 5;
        using var model = new HookedTransformer(config).InitWeights(0);
        var graph = ComputationGraph.For(config);
        using var tokensGenerator = new Generator(7); // the same prompts every run, so the bf16 error rows compare across runs
        using var clean = randint(0, config.DVocab, [batch, tokens], dtype: ScalarType.Int64, generator: tokensGenerator);
        // Pairs that share their first half (a counterfactual that changes one token mid-prompt, as IOI's or
        // greater-than's do), and pairs that also differ at the first token (no shared prefix: Δ covers every position).
        using var corrupted = clean.clone();
        corrupted[.., tokens / 2] = randint(0, config.DVocab, [batch], dtype: ScalarType.Int64, generator: tokensGenerator);
        using var corruptedFirst = corrupted.clone();
        corruptedFirst[.., 0] = randint(0, config.DVocab, [batch], dtype: ScalarType.Int64, generator: tokensGenerator);
        static Tensor Loss(Tensor logits) => logits[.., -1, 0].to(ScalarType.Float32).mean();
        static double Once(Action a)
        {
            using var scope = NewDisposeScope();
            var clock = Stopwatch.StartNew();
            a();
            return clock.Elapsed.TotalSeconds;
        }
        // The path circuits.attribute takes for eap and eap-ig-inputs with the counterfactual ablation.
        var attribution = new EdgeAttribution(model, graph);
        void Forward() { using var _ = no_grad(); model.Forward(corrupted); }
        void ForwardBackward()
        {
            using var frozen = new FrozenWeights(model);
            using (model.Hook("hook_embed").Add((x, _) => x.detach().requires_grad_(true)))
            {
                Loss(model.Forward(clean)).backward();
            }
        }
        Tensor? eapScores = null, igScores = null;
        var methods = new (string Name, int Passes, double Target, Action Run)[]
        {
            ($"EAP, pairs share {tokens / 2} of {tokens} tokens", 1, 1.15, () => { eapScores?.Dispose(); eapScores = attribution.Eap(clean, corrupted, Loss).DetachFromDisposeScope(); }),
            ($"EAP-IG-inputs, m = {m}, pairs share {tokens / 2} of {tokens} tokens", m, 1.10, () => { igScores?.Dispose(); igScores = attribution.EapIgInputs(clean, corrupted, Loss, m).DetachFromDisposeScope(); }),
            ("EAP, pairs differ at the first token", 1, 1.15, () => attribution.Eap(clean, corruptedFirst, Loss).Dispose()),
            ($"EAP-IG-inputs, m = {m}, pairs differ at the first token", m, 1.10, () => attribution.EapIgInputs(clean, corruptedFirst, Loss, m).Dispose()),
        };
        Once(Forward);
        Once(ForwardBackward);
        foreach (var method in methods)
        {
            Once(method.Run);
        }
        var ratios = methods.Select(_ => new List<double>()).ToArray();
        var igSeconds = new List<double>();
        for (var round = 0; round < rounds; round++)
        {
            var forward = Once(Forward);
            var forwardBackward = Once(ForwardBackward);
            for (var i = 0; i < methods.Length; i++)
            {
                var seconds = Once(methods[i].Run);
                ratios[i].Add(seconds / (forward + methods[i].Passes * forwardBackward));
                if (i == 1)
                {
                    igSeconds.Add(seconds);
                }
            }
        }
        for (var i = 0; i < methods.Length; i++)
        {
            var r = ratios[i].Order().ToList();
            Rows.Add(($"{methods[i].Name} ÷ its bare passes (fused, as workflows run it; batch {batch} × {tokens}, median of {rounds})", $"{r[r.Count / 2]:F2} ({r[0]:F2}–{r[^1]:F2})", $"≤ {methods[i].Target:F2}"));
        }

        // Memory: the Δ store, and EAP-IG's peak over the resident model, per example.
        Rows.Add(("Δ store per example (f32, tokens × n_forward × d_model)", $"{(double)tokens * graph.NForward * config.DModel * 4 / 1048576:F1} MiB", "streamed or bf16 where the ranking holds"));
        // Peak per example: the slope of the heap's peak in-use bytes between batch 4 and batch 12 (the fixed part, such
        // as the scores, cancels).
        long Peak(int copies)
        {
            using var wide = cat(Enumerable.Repeat(clean, copies).ToList(), 0);
            using var wideCorrupted = cat(Enumerable.Repeat(corrupted, copies).ToList(), 0);
            return HeapMeter.PeakAbove(() => { using var s = NewDisposeScope(); attribution.EapIgInputs(wide, wideCorrupted, Loss, m); });
        }
        var slope = (Peak(3) - Peak(1)) / (2.0 * batch);
        Rows.Add(($"EAP-IG peak memory per example (slope from batch {batch} to {3 * batch})", $"{slope / 1048576.0:F0} MiB (maxMemory's estimate: {AttributionMemory.PerExample(config, tokens, graph.NForward, runs: m) / 1048576.0:F0} MiB)", "reported; maxMemory picks the batch size"));

        // bf16: the same attribution with the model's weights and activations in bf16, scores accumulated in f32.
        model.to(ScalarType.BFloat16);
        var f32Ig = igScores!;
        igScores = null;
        Once(methods[1].Run);
        var bf16Seconds = Enumerable.Range(0, rounds).Select(_ => Once(methods[1].Run)).Order().ToList();
        var f32Median = igSeconds.Order().ToList()[igSeconds.Count / 2];
        var (spearman, topError) = ScoreAgreement.Compare(f32Ig, igScores!, 100);
        Rows.Add(($"EAP-IG in bf16: speed-up over f32", $"{f32Median / bf16Seconds[bf16Seconds.Count / 2]:F2} ×", "reported"));
        Rows.Add(($"EAP-IG in bf16: Spearman ρ of |scores| against f32 ({graph.EdgeCount:N0} edges)", $"{spearman:F4}", "reported (tolerance test: ≥ 0.99 on a small model)"));
        Rows.Add(("EAP-IG in bf16: largest relative error among f32's top 100 edges", $"{topError:P1}", "reported"));
        f32Ig.Dispose();
        igScores?.Dispose();
        eapScores?.Dispose();
    }

    private static void Decode()
    {
        var world = ToyWorld.Generate(0);
        var tokenizer = world.Tokenizer();
        var options = new ChatTrainingOptions();
        using var model = new HookedTransformer(ChatTrainer.ModelConfig(options, tokenizer.Vocabulary.Count, tokenizer)).InitWeights(1);
        var generator = new TextGenerator(model, tokenizer);
        var prompts = Enumerable.Range(0, 32).Select(i => ToyWorld.Format(CrawlPrompts.Build(InjectionMode.AssistantPrefix, world.Refused.ElementAt(i),
            CrawlPrompts.UserTemplates(CrawlPrompts.English)[i % 5], CrawlPrompts.Thinking(CrawlPrompts.English)[i % 21], CrawlPrompts.English))).ToList();
        const int newTokens = 24;
        double Rate(int batch) => batch * newTokens / Best(6, () =>
            generator.Generate(prompts.Take(batch).ToList(), new GenerationOptions { MaxNewTokens = newTokens, StopAtEos = false, Temperature = 0.6, Seed = 1 }));
        var single = Rate(1);
        var batched = Rate(32);
        Rows.Add(("decode tokens/s on the toy chat model (the crawler's), batch 32 ÷ batch 1", $"{batched / single:F1} × ({batched:F0} vs {single:F0} tok/s)", "≥ 8 ×"));
    }

    private static void Unet()
    {
        using var noGrad = no_grad();
        using var cx = randn(32, 64, 32, 32);
        using var cw = randn(64, 64, 3, 3);
        var convRate = 2.0 * 32 * 64 * 32 * 32 * 64 * 9 / Best(5, () => nn.functional.conv2d(cx, cw, padding: [1, 1]));
        foreach (var side in new[] { 16, 32 })
        {
            var world = new Pipelines.Models.Diffusion.Toy.ToyWorld(side, side == 32);
            using var pipe = Pipelines.Models.Diffusion.Toy.ToyDiffusionTrainer.Create(world, 1);
            const int batch = 32;
            using var x = randn(batch, 3, side, side);
            using var ctx = randn(batch, Pipelines.Models.Diffusion.Toy.ToyDiffusionTrainer.ContextLength, 32);
            using var t = tensor(500);
            var macs = Pipelines.Models.Diffusion.MacCounter.Measure(() => { using var s = NewDisposeScope(); pipe.Unet.Forward(x, t, ctx); }) / batch;
            var samples = batch / Best(4, () => pipe.Unet.Forward(x, t, ctx));
            Rows.Add(($"toy UNet forward, {side} px, batch {batch}", $"{samples:F0} samples/s, {2.0 * macs * samples / convRate:F2} of the 3×3 conv rate ({convRate / 1e9:F0} GFLOP/s)", "reported as a fraction of the conv rate"));
        }
    }
}
