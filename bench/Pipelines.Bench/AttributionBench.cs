using System.Diagnostics;
using Pipelines.Activities.Circuits;
using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Bench;

/// <summary>
/// Attribution overhead: EAP and EAP-IG time over the bare passes they need (clean forward, corrupted forward, and
/// forward+backward), same batch, same run, GPT-2-small shape. Usage: ... -- attribution [--batch 2] [--tokens 32]
/// </summary>
public static class AttributionBench
{
    public static int Run(string[] args)
    {
        TorchRuntime.EnsureLoaded();
        int Arg(string name, int fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback;
        var batch = Arg("--batch", 2);
        var tokens = Arg("--tokens", 32);
        var config = new TransformerConfig { Architecture = "gpt2", DModel = 768, NLayers = 12, NHeads = 12, DMlp = 3072, DVocab = 50257, NCtx = 1024 };
        using var model = new HookedTransformer(config).InitWeights(0);
        var graph = ComputationGraph.For(config);
        using var clean = randint(0, config.DVocab, [batch, tokens], dtype: ScalarType.Int64);
        using var corrupted = clean.clone();
        corrupted[.., tokens / 2] = randint(0, config.DVocab, [batch], dtype: ScalarType.Int64);
        Tensor Loss(Tensor logits) => logits[.., -1, 0].mean();

        double Time(Action a)
        {
            a(); // warm-up
            var clock = Stopwatch.StartNew();
            a();
            return clock.Elapsed.TotalSeconds;
        }
        var forward = Time(() => { using var _ = no_grad(); using var l = model.Forward(clean); });
        var backward = Time(() => { using var scope = NewDisposeScope(); model.zero_grad(); Loss(model.Forward(clean)).backward(); });
        var bare = 2 * forward + backward;
        var attribution = new EdgeAttribution(model, graph);
        var eap = Time(() => { using var s = attribution.Eap(clean, corrupted, Loss); });
        const int m = 5;
        var ig = Time(() => { using var s = attribution.EapIgInputs(clean, corrupted, Loss, m); });
        var igBare = 2 * forward + m * backward;
        var deltaBytes = (double)tokens * graph.NForward * config.DModel * 4;
        Console.WriteLine($"Attribution overhead: GPT-2-small shape, {graph.EdgeCount:N0} edges, batch {batch} × {tokens} tokens, {get_num_threads()} threads");
        Console.WriteLine();
        Console.WriteLine("| method | time ÷ bare passes it needs | bare passes |");
        Console.WriteLine("|---|---|---|");
        Console.WriteLine($"| EAP | {eap / bare:F2} | clean fwd + corrupted fwd + fwd/bwd |");
        Console.WriteLine($"| EAP-IG-inputs (m = {m}) | {ig / igBare:F2} | 2 fwd + {m} × fwd/bwd |");
        Console.WriteLine($"| activation-difference store Δ | {deltaBytes / 1024 / 1024:F1} MiB per example | tokens × n_forward × d_model × 4 B |");
        return 0;
    }
}
