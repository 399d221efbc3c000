using Pipelines.Models.Runtime;
using Pipelines.Activities.Circuits;
using Pipelines.Models.Transformer;
using TorchSharp;
using Pipelines.Tests.Models;
using Xunit.Abstractions;
using static Pipelines.Tests.Circuits.CircuitFixtures;
using static TorchSharp.torch;

namespace Pipelines.Tests.Circuits;

public sealed class PositionalAttributionTests(ITestOutputHelper output)
{
    /// <summary>ℒ per example: −(logit 9 − logit 4) for row 0 and −(logit 8 − logit 3) for row 1, at the last position.</summary>
    private static Tensor PerExampleLoss(Tensor logits)
    {
        var last = logits[.., -1];
        return stack([-(last[0, 9] - last[0, 4]), -(last[1, 8] - last[1, 3])]);
    }

    /// <summary>One span per position (BOS included): [B, T, T].</summary>
    private static Tensor PerPositionSpans(int batch, int length) => eye(length).unsqueeze(0).expand(batch, -1, -1).contiguous();

    [Theory]
    [MemberData(nameof(TinyModels.All), MemberType = typeof(TinyModels))]
    public void NonCrossingScoresSummedOverPositionsAreEap(string architecture)
    {
        using var scope = NewDisposeScope();
        using var model = TinyModels.Create(architecture);
        model.to(ScalarType.Float64);
        var graph = ComputationGraph.For(model.Config);
        using var scores = new PositionalAttribution(model, graph).Score(Clean, Corrupt, ones_like(Clean), PerPositionSpans(2, 6), PerExampleLoss);
        var eap = new EdgeAttribution(model, graph).Eap(Clean, Corrupt, Loss);
        var summed = scores.NonCrossing["sum"].sum(0L).div(Scalars.Int(2)); // over spans; mean over the 2 examples
        Assert.True((summed - eap).abs().max().item<double>() <= 1e-9 * eap.abs().max().item<double>());
        // With one token per span, |Σ| = Σ|·| = max|·| and avg = sum.
        Assert.True(scores.NonCrossing["sum_abs_exp"].allclose(scores.NonCrossing["sum_abs_pos"]));
        Assert.True(scores.NonCrossing["max_abs"].allclose(scores.NonCrossing["sum_abs_pos"]));
        Assert.True(scores.NonCrossing["avg"].allclose(scores.NonCrossing["sum"]));
    }

    /// <summary>
    /// Every crossing edge of every head, recomputed by running the model with that one interaction patched (the key
    /// or value row t′ replaced by the counterfactual's, or the single logit (t, t′) replaced by q*_t·k_t′/√d), and
    /// reading the head's result at the query t: (result′ − result)·g_t must equal the closed form.
    /// </summary>
    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("gpt_neox")]
    [InlineData("qwen2")]
    public void CrossingEdgeScoresAgreeWithExactRecomputation(string architecture)
    {
        using var scope = NewDisposeScope();
        using var model = TinyModels.Create(architecture, seed: 4);
        model.to(ScalarType.Float64);
        var cfg = model.Config;
        var graph = ComputationGraph.For(cfg);
        var clean = Clean[..1];
        var corrupt = Corrupt[..1];
        Tensor Loss1(Tensor logits) => -(logits[.., -1, 9] - logits[.., -1, 4]);
        const int T = 6;
        using var scores = new PositionalAttribution(model, graph).Score(clean, corrupt, ones_like(clean), PerPositionSpans(1, T), Loss1);
        var crossing = scores.Crossing["sum"]; // [T(query), T(key), L·H, 3]

        var rotary = cfg.Positional == PositionalKind.Rotary;
        var split = new ForwardOptions { UseAttnResult = true, SplitQkvInput = true };
        var group = cfg.NHeads / cfg.KvHeads;
        double worst = 0, largest = 0;
        var checkedEdges = 0;
        for (var l = 0; l < cfg.NLayers; l++)
        {
            string qName = rotary ? $"blocks.{l}.attn.hook_rot_q" : $"blocks.{l}.attn.hook_q", kName = rotary ? $"blocks.{l}.attn.hook_rot_k" : $"blocks.{l}.attn.hook_k";
            string vName = $"blocks.{l}.attn.hook_v", result = $"blocks.{l}.attn.hook_result", logitsName = $"blocks.{l}.attn.hook_attn_scores";
            var seen = new Dictionary<string, Tensor>();
            Func<Tensor, HookPoint, Tensor?> Keep(string key) => (x, _) => { seen[key] = x.detach().clone().DetachFromDisposeScope(); return null; };
            using (no_grad())
            {
                model.RunWithHooks(corrupt, [(qName, Keep("q*")), (kName, Keep("k*")), (vName, Keep("v*"))], null, split);
                model.RunWithHooks(clean, [(qName, Keep("q")), (kName, Keep("k")), (result, Keep("result"))], null, split);
            }
            Tensor g;
            using (var capture = new GradientCapture(model, [result]))
            {
                using (enable_grad())
                {
                    Loss1(model.Forward(clean, options: split)).sum().backward();
                }
                g = capture.Grad(result).detach().clone();
                model.zero_grad();
            }
            for (var h = 0; h < cfg.NHeads; h++)
            {
                // With split q/k/v inputs every query head has its own k and v rows, even under GQA.
                var kv = seen["k"].shape[2] == cfg.NHeads ? h : h / group;
                for (var t = 1; t < T; t++)
                {
                    for (var tp = 0; tp <= t; tp++)
                    {
                        var (hh, tt, ttp) = (h, t, tp);
                        var patches = new (int Kind, string Hook, Func<Tensor, HookPoint, Tensor?> Patch)[]
                        {
                            (0, logitsName, (x, _) => { var y = x.clone(); y[0, hh, tt, ttp] = (seen["q*"][0, tt, hh] * seen["k"][0, ttp, kv]).sum().mul(Pipelines.Models.Runtime.Scalars.Of(1 / Math.Sqrt(cfg.HeadDim))); return y; }),
                            (1, kName, (x, _) => { var y = x.clone(); y[0, ttp, kv] = seen["k*"][0, ttp, kv]; return y; }),
                            (2, vName, (x, _) => { var y = x.clone(); y[0, ttp, kv] = seen["v*"][0, ttp, kv]; return y; }),
                        };
                        foreach (var (kind, hook, patch) in patches)
                        {
                            Tensor patched = null!;
                            using (no_grad())
                            {
                                model.RunWithHooks(clean, [(hook, patch), (result, (x, _) => { patched = x.detach().clone().DetachFromDisposeScope(); return null; })], null, split);
                            }
                            var exact = ((patched[0, t, h] - seen["result"][0, t, h]) * g[0, t, h]).sum().item<double>();
                            var closed = crossing[t, tp, l * cfg.NHeads + h, kind].item<double>();
                            worst = Math.Max(worst, Math.Abs(exact - closed));
                            largest = Math.Max(largest, Math.Abs(exact));
                            checkedEdges++;
                        }
                    }
                }
            }
        }
        output.WriteLine($"{checkedEdges} crossing edges, max |exact| {largest:E3}, max |closed − exact| {worst:E3}");
        Assert.Equal(cfg.NLayers * cfg.NHeads * 3 * (T - 1) * (T + 2) / 2, checkedEdges);
        Assert.True(largest > 1e-6);
        Assert.True(worst <= 1e-9 * largest, $"max |closed − exact| {worst} vs {largest}");
    }

    [Fact]
    public void CoefficientIsStableForLargeLogitChangesAndMatchesTheSoftmax()
    {
        var a = tensor(new[] { 0.3, 0.3, 1e-6, 0.999 }, dtype: ScalarType.Float64);
        var d = tensor(new[] { 2.0, -3.0, 800.0, -800.0 }, dtype: ScalarType.Float64);
        var c = PositionalAttribution.Coefficient(a, d);
        // Softmax with one logit moved by δ: z′ − z = c·(v − z) with c = a(e^δ − 1)/(1 + a(e^δ − 1)).
        for (var i = 0; i < 2; i++)
        {
            var (ai, di) = (a[i].item<double>(), d[i].item<double>());
            var expected = ai * (Math.Exp(di) - 1) / (1 + ai * (Math.Exp(di) - 1));
            Assert.Equal(expected, c[i].item<double>(), 12);
        }
        Assert.Equal(1.0, c[2].item<double>(), 9); // the key takes all the weight
        Assert.Equal(-999, c[3].item<double>(), 6); // the key loses all its weight: z′ = (z − a·v)/(1 − a), so z′ − z = −a/(1 − a)·(v − z)
        Assert.False(c.isnan().any().item<bool>());
    }
}
