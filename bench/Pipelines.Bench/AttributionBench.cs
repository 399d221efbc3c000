using System.Diagnostics;
using Pipelines.Activities.Circuits;
using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Bench;

/// <summary>
/// Attribution overhead: EAP and EAP-IG time over the bare passes they need (clean forward, corrupted forward, and
/// forward+backward), same batch, same run, GPT-2-small shape. Usage: ... -- attribution [--batch 8] [--tokens 32] [--rounds 5]
/// </summary>
public static class AttributionBench
{
    public static int Run(string[] args)
    {
        TorchRuntime.EnsureLoaded();
        int Arg(string name, int fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback;
        var batch = Arg("--batch", 8);
        var rounds = Arg("--rounds", 5);
        var tokens = Arg("--tokens", 32);
        var config = new TransformerConfig { Architecture = "gpt2", DModel = 768, NLayers = 12, NHeads = 12, DMlp = 3072, DVocab = 50257, NCtx = 1024 };
        using var model = new HookedTransformer(config).InitWeights(0);
        var graph = ComputationGraph.For(config);
        using var clean = randint(0, config.DVocab, [batch, tokens], dtype: ScalarType.Int64);
        using var corrupted = clean.clone();
        corrupted[.., tokens / 2] = randint(0, config.DVocab, [batch], dtype: ScalarType.Int64);
        Tensor Loss(Tensor logits) => logits[.., -1, 0].mean();

        static double Once(Action a)
        {
            var clock = Stopwatch.StartNew();
            a();
            return clock.Elapsed.TotalSeconds;
        }
        const int m = 5;
        var attribution = new EdgeAttribution(model, graph);
        var reference = new EdgeAttribution(model, graph, fused: false);
        void Forward() { using var _ = no_grad(); using var l = model.Forward(corrupted); }
        // The bare backward computes activation gradients only (what attribution needs): weights frozen, embeddings the leaf.
        void ForwardBackward()
        {
            using var scope = NewDisposeScope();
            foreach (var p in model.parameters())
            {
                p.requires_grad_(false);
            }
            using (model.Hook("hook_embed").Add((x, _) => x.detach().requires_grad_(true)))
            {
                Loss(model.Forward(clean)).backward();
            }
            foreach (var p in model.parameters())
            {
                p.requires_grad_(true);
            }
        }
        var methods = new (string Name, int Passes, Action Run)[]
        {
            ("EAP (fused)", 1, () => { using var s = attribution.Eap(clean, corrupted, Loss); }),
            ("EAP (split inputs)", 1, () => { using var s = reference.Eap(clean, corrupted, Loss); }),
            ($"EAP-IG-inputs m = {m} (fused)", m, () => { using var s = attribution.EapIgInputs(clean, corrupted, Loss, m); }),
            ($"EAP-IG-inputs m = {m} (split inputs)", m, () => { using var s = reference.EapIgInputs(clean, corrupted, Loss, m); }),
        };
        // Warm up everything, then interleave: each round times the bare passes and every method back to back, so a
        // noisy neighbour affects both sides of a ratio alike. The ratio reported is the median over rounds.
        Forward();
        ForwardBackward();
        foreach (var method in methods)
        {
            method.Run();
        }
        var ratios = methods.Select(_ => new List<double>()).ToArray();
        for (var round = 0; round < rounds; round++)
        {
            var forward = Once(Forward);
            var forwardBackward = Once(ForwardBackward);
            for (var i = 0; i < methods.Length; i++)
            {
                // The bare passes (the definition): the corrupted forward, and the clean forward and backward per gradient run.
                ratios[i].Add(Once(methods[i].Run) / (forward + methods[i].Passes * forwardBackward));
            }
        }
        var deltaBytes = (double)tokens * graph.NForward * config.DModel * 4;
        Console.WriteLine($"Attribution overhead: GPT-2-small shape, {graph.EdgeCount:N0} edges, batch {batch} × {tokens} tokens, {get_num_threads()} threads, {rounds} interleaved rounds");
        Console.WriteLine();
        Console.WriteLine("| method | time ÷ bare passes (median) | min–max over rounds | bare passes |");
        Console.WriteLine("|---|---|---|---|");
        for (var i = 0; i < methods.Length; i++)
        {
            var r = ratios[i].Order().ToList();
            Console.WriteLine($"| {methods[i].Name} | {r[r.Count / 2]:F2} | {r[0]:F2}–{r[^1]:F2} | corrupted fwd + {methods[i].Passes} × clean fwd+bwd |");
        }
        Console.WriteLine($"| activation-difference store Δ | {deltaBytes / 1024 / 1024:F1} MiB per example | tokens × n_forward × d_model × 4 B |");
        return 0;
    }
}
