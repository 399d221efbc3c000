using Pipelines.Models.Runtime;
using Pipelines.Activities.Circuits;
using Pipelines.Models.Transformer;
using Pipelines.Tests.Circuits;
using TorchSharp;
using Xunit;
using static TorchSharp.torch;

namespace Pipelines.Tests.Models;

/// <summary>
/// The forward takes libtorch's fused kernels (layer_norm, scaled_dot_product_attention, tanh-GELU) when no hook reads
/// the intermediate values, and the step-by-step path when one does. Both must compute the same function; bf16 runs
/// stay within their stated tolerances of float32.
/// </summary>
public sealed class FusedKernelTests
{
    static FusedKernelTests() => Pipelines.Models.Runtime.TorchRuntime.EnsureLoaded();

    /// <summary>Forces the step-by-step path: an observing hook on every norm's scale and every attention pattern.</summary>
    private static IDisposable StepByStep(HookedTransformer model)
    {
        var hooks = model.HookPoints.Where(h => h.Key.EndsWith("hook_scale", StringComparison.Ordinal) || h.Key.EndsWith("hook_pattern", StringComparison.Ordinal))
            .Select(h => h.Value.Add((_, _) => null)).ToList();
        Assert.NotEmpty(hooks);
        return new Pipelines.Tests.Models.Disposables(hooks);
    }

    [Theory]
    [MemberData(nameof(TinyModels.All), MemberType = typeof(TinyModels))]
    public void FusedKernelsComputeTheSameLogitsAsTheHookedPath(string architecture)
    {
        using var scope = NewDisposeScope();
        using var model = TinyModels.Create(architecture, seed: 3);
        model.to(ScalarType.Float64);
        using var noGrad = no_grad();
        var tokens = tensor(new long[,] { { 1, 5, 9, 2, 7, 3, 4, 8 }, { 0, 0, 1, 8, 8, 4, 6, 2 } });
        var padded = ones_like(tokens);
        padded[1, ..2] = tensor(0L); // left padding, as batched generation makes
        foreach (var mask in new Tensor?[] { null, padded })
        {
            var fused = model.Forward(tokens, mask);
            Tensor reference;
            using (StepByStep(model))
            {
                reference = model.Forward(tokens, mask);
            }
            // Real positions only: a padding query sees no key, and what it computes is never read (the two paths give
            // it different uniform-ish weights in float64).
            var real = (mask ?? ones_like(tokens)).to(ScalarType.Bool);
            var worst = (fused - reference).abs().amax([-1L])[real].max().item<double>();
            Assert.True(worst < 1e-9 * reference.abs().max().item<double>(), $"{architecture}, mask {(mask is null ? "none" : "padded")}: max |fused − hooked| {worst:E2}");
        }
    }

    [Fact]
    public void GeluNewIsTheTanhFormula()
    {
        // GPT-2's gelu_new, written out: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        using var scope = NewDisposeScope();
        var cfg = TinyModels.Gpt2 with { DModel = 4, DMlp = 4 };
        using var mlp = new Mlp("mlp", cfg);
        using var noGrad = no_grad();
        mlp.W_in.copy_(eye(4));
        mlp.W_out.copy_(eye(4));
        mlp.b_in!.zero_();
        mlp.b_out!.zero_();
        mlp.to(ScalarType.Float64);
        var x = linspace(-6, 6, 400, dtype: ScalarType.Float64).view(100, 4);
        var expected = x.Times(0.5) * x.Plus(x.pow(Scalars.Int(3)).Times(0.044715)).Times(Math.Sqrt(2 / Math.PI)).tanh().Shift(1.0);
        Assert.True((mlp.forward(x) - expected).abs().max().item<double>() < 1e-12);
    }

    [Fact]
    public void FusedKernelsGiveTheSameGradients()
    {
        using var scope = NewDisposeScope();
        using var model = TinyModels.Create("gpt2", seed: 4);
        model.to(ScalarType.Float64);
        var tokens = tensor(new long[,] { { 1, 5, 9, 2, 7, 3 }, { 1, 8, 8, 4, 6, 2 } });
        Tensor[] Grads()
        {
            model.zero_grad();
            model.Forward(tokens)[.., -1].logsumexp(-1).sum().backward();
            return model.parameters().Select(p => p.grad!.clone()).ToArray();
        }
        var fused = Grads();
        Tensor[] reference;
        using (StepByStep(model))
        {
            reference = Grads();
        }
        // Against the largest gradient of all: b_K's is zero in exact arithmetic (softmax ignores a shift shared by
        // every key), so only rounding noise is left there.
        var largest = reference.Max(r => r.abs().max().item<double>());
        for (var i = 0; i < fused.Length; i++)
        {
            var scale = Math.Max(reference[i].abs().max().item<double>(), 1e-3 * largest);
            var worst = (fused[i] - reference[i]).abs().max().item<double>();
            Assert.True(worst <= 1e-9 * Math.Max(scale, 1e-12), $"parameter {model.named_parameters().ElementAt(i).name}: max |Δ| {worst:E2} of {scale:E2}");
        }
    }

    /// <summary>
    /// The stated bf16 tolerances (README, Performance): logits within 5 % of their largest magnitude; fused EAP scores
    /// with a Spearman correlation of |scores| ≥ 0.98 against float32, and the top 10 edges within 15 %.
    /// </summary>
    [Fact]
    public void Bf16StaysWithinItsStatedTolerances()
    {
        using var scope = NewDisposeScope();
        using var model = TinyModels.Create("gpt2", seed: 5);
        var graph = ComputationGraph.For(model.Config);
        Tensor logits32, scores32;
        using (no_grad())
        {
            logits32 = model.Forward(CircuitFixtures.Clean);
        }
        scores32 = new EdgeAttribution(model, graph).EapIgInputs(CircuitFixtures.Clean, CircuitFixtures.Corrupt, CircuitFixtures.Loss, 5);
        model.to(ScalarType.BFloat16);
        Tensor logits16;
        using (no_grad())
        {
            logits16 = model.Forward(CircuitFixtures.Clean);
        }
        Assert.Equal(ScalarType.BFloat16, logits16.dtype);
        var scores16 = new EdgeAttribution(model, graph).EapIgInputs(CircuitFixtures.Clean, CircuitFixtures.Corrupt, l => CircuitFixtures.Loss(l.to(ScalarType.Float32)), 5);
        Assert.Equal(ScalarType.Float32, scores16.dtype); // accumulated in float32
        var logitError = (logits16.to(ScalarType.Float32) - logits32).abs().max().item<float>() / logits32.abs().max().item<float>();
        Assert.True(logitError < 0.05, $"bf16 logits: max error {logitError:P2} of the largest logit");
        var (rho, top) = ScoreAgreement.Compare(scores32, scores16, 10);
        Assert.True(rho >= 0.98 && top <= 0.15, $"bf16 EAP-IG: Spearman {rho:F4}, top-10 relative error {top:P1}");
    }
}

/// <summary>Disposes a list of hook removers together.</summary>
internal sealed class Disposables(IEnumerable<IDisposable> items) : IDisposable
{
    public void Dispose()
    {
        foreach (var d in items)
        {
            d.Dispose();
        }
    }
}
