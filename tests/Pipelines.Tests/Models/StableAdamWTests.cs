using Pipelines.Models.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using Xunit;
using static TorchSharp.torch;

namespace Pipelines.Tests.Models;

/// <summary>
/// StableAdamW replaces TorchSharp's AdamW in the long training loops (TorchSharp's passes temporary Scalars the GC can
/// finalize mid-call), so it must take the same steps: equal to the bit to TorchSharp's AdamW and Adam over 25 steps of a
/// small regression, and against a hand-written bias-corrected update after one step.
/// </summary>
public sealed class StableAdamWTests
{
    static StableAdamWTests() => TorchRuntime.EnsureLoaded();

    private static (Parameter W, Parameter B) Model(long seed)
    {
        using var g = new Generator((ulong)seed);
        return (new Parameter(randn([4, 6], generator: g)), new Parameter(randn([4], generator: g)));
    }

    private static Tensor Loss(Parameter w, Parameter b, int step)
    {
        using var g = new Generator((ulong)(100 + step));
        var x = randn([8, 6], generator: g);
        var y = randn([8, 4], generator: g);
        return (nn.functional.linear(x, w, b) - y).Squared().mean();
    }

    /// <summary>Both optimisers take <paramref name="steps"/> steps on the same losses, each on its own copy of the model.</summary>
    private static void Lockstep(optim.Optimizer reference, Parameter w1, Parameter b1, StableAdamW ours, Parameter w2, Parameter b2, int steps)
    {
        for (var step = 0; step < steps; step++)
        {
            reference.zero_grad();
            Loss(w1, b1, step).backward();
            reference.step();
            ours.zero_grad();
            Loss(w2, b2, step).backward();
            ours.step();
        }
    }

    [Theory]
    [InlineData(1e-4)]
    [InlineData(0.0)]
    public void StepsEqualTorchSharpsAdamW(double weightDecay)
    {
        using var scope = NewDisposeScope();
        var (w1, b1) = Model(3);
        var (w2, b2) = Model(3);
        using var reference = weightDecay == 0 ? (optim.Optimizer)optim.Adam([w1, b1], lr: 3e-3) : optim.AdamW([w1, b1], lr: 3e-3, weight_decay: weightDecay);
        using var ours = new StableAdamW([w2, b2], 3e-3, weightDecay: weightDecay);
        Lockstep(reference, w1, b1, ours, w2, b2, 25);
        // The same operations in the same order: equal to the bit, so results trained before the switch still hold.
        Assert.Equal(0f, (w1 - w2).abs().max().item<float>());
        Assert.Equal(0f, (b1 - b2).abs().max().item<float>());
        Assert.True((w1 - Model(3).W).abs().max().item<float>() > 1e-2f, "the parameters moved");
    }

    [Fact]
    public void TheFirstStepIsTheBiasCorrectedUpdate()
    {
        using var scope = NewDisposeScope();
        var (w, b) = Model(5);
        var w0 = w.detach().clone();
        using var ours = new StableAdamW([w, b], 0.01, weightDecay: 0.1);
        Loss(w, b, 0).backward();
        var grad = w.grad!.clone();
        ours.step();
        // After one step m̂ = g and v̂ = g², so the update is lr·g/(|g| + ε) after decay by (1 − lr·wd).
        var expected = w0.Times(1 - 0.01 * 0.1) - (grad / grad.abs().Shift(1e-8)).Times(0.01);
        Assert.True((w - expected).abs().max().item<float>() < 1e-6f);
    }

    [Fact]
    public void CoupledDecayEqualsTorchSharpsAdamWithWeightDecay()
    {
        using var scope = NewDisposeScope();
        var (w1, b1) = Model(4);
        var (w2, b2) = Model(4);
        using var reference = optim.Adam([w1, b1], lr: 0.01, weight_decay: 0.1);
        using var ours = new StableAdamW([w2, b2], 0.01, weightDecay: 0.1, coupledWeightDecay: true);
        Lockstep(reference, w1, b1, ours, w2, b2, 25);
        Assert.Equal(0f, (w1 - w2).abs().max().item<float>());
        Assert.Equal(0f, (b1 - b2).abs().max().item<float>());
    }

    [Fact]
    public void ASavedStateResumesToTheSameBits()
    {
        using var scope = NewDisposeScope();
        var path = Path.Combine(Path.GetTempPath(), $"adamw-{Guid.NewGuid():N}.bin");
        try
        {
            var (w1, b1) = Model(6);
            using var straight = new StableAdamW([w1, b1], 3e-3, 0.9, 0.98, weightDecay: 1e-2);
            var (w2, b2) = Model(6);
            using var first = new StableAdamW([w2, b2], 3e-3, 0.9, 0.98, weightDecay: 1e-2);
            for (var step = 0; step < 20; step++)
            {
                straight.zero_grad();
                Loss(w1, b1, step).backward();
                straight.step();
                if (step < 10)
                {
                    first.zero_grad();
                    Loss(w2, b2, step).backward();
                    first.step();
                }
            }
            first.Save(path);
            // A new optimizer over copies of the weights at step 10, its moments read back from the file.
            var w3 = new Parameter(w2.detach().clone());
            var b3 = new Parameter(b2.detach().clone());
            using var resumed = new StableAdamW([w3, b3], 3e-3, 0.9, 0.98, weightDecay: 1e-2);
            resumed.Load(path);
            Assert.Equal(10, resumed.Steps);
            for (var step = 10; step < 20; step++)
            {
                resumed.zero_grad();
                Loss(w3, b3, step).backward();
                resumed.step();
            }
            Assert.Equal(0f, (w1 - w3).abs().max().item<float>());
            Assert.Equal(0f, (b1 - b3).abs().max().item<float>());
            // A state for other shapes is refused, not half-loaded.
            using var other = new StableAdamW([new Parameter(zeros(3, 3))], 1e-3);
            Assert.Throws<InvalidDataException>(() => other.Load(path));
            // A truncated file is refused too.
            using (var f = File.OpenWrite(path))
            {
                f.SetLength(f.Length - 8);
            }
            Assert.Throws<EndOfStreamException>(() => resumed.Load(path));
            Assert.Equal(20, resumed.Steps); // unchanged: nothing of a refused file is applied
        }
        finally
        {
            File.Delete(path);
        }
    }
}
