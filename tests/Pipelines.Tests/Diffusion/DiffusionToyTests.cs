using System.Text.Json.Nodes;
using Pipelines.Engine.Ledger;
using Pipelines.Models.Common;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using Pipelines.Models.Runtime;
using Xunit;
using static TorchSharp.torch;

namespace Pipelines.Tests.Diffusion;

/// <summary>The toy world, its scorer and trainer, the diversity metrics, distillation's target and the hybrid sampler, on known answers.</summary>
public sealed class DiffusionToyTests
{
    static DiffusionToyTests() => TorchRuntime.EnsureLoaded();

    [Fact]
    public void ToyWorldDrawsTheFactorsItNames()
    {
        var world = new ToyWorld(16);
        var r = new SeededRandom(1);
        using var scope = NewDisposeScope();
        // A large centred shape: the centre pixel has the shape's colour, a corner the background's.
        var items = Enumerable.Range(0, 4).Select(s => new ToyItem(s, s, 0.38, 0, 0, 0)).ToList();
        var img = world.Render(items, r, 0);
        float[][] rgb = [[0.9f, -0.8f, -0.8f], [-0.8f, 0.75f, -0.8f], [-0.8f, -0.7f, 0.9f], [0.9f, 0.85f, -0.85f]];
        for (var b = 0; b < 4; b++)
        {
            var centre = img[b, .., 8, 8].data<float>().ToArray();
            Assert.Equal(rgb[b], centre, (x, y) => Math.Abs(x - y) < 1e-5);
            Assert.All(img[b, .., 0, 0].data<float>().ToArray(), v => Assert.Equal(0.1f, v, 1e-5f));
        }
        // Coverage follows the geometry: circle πh² > square (1.7h)² > cross (8/3 − 4/9)h² > triangle 2h².
        double Cover(int shape) => Enumerable.Range(0, 400).Sum(i => ToyWorld.Inside(shape, (i % 20 - 9.5) / 20 * 0.5, (i / 20 - 9.5) / 20 * 0.5, 0.2) ? 1 : 0);
        Assert.True(Cover(0) > Cover(1) && Cover(1) > Cover(3) && Cover(3) > Cover(2), $"{Cover(0)} {Cover(1)} {Cover(3)} {Cover(2)}");
        Assert.Equal("large red circle", world.Prompt(new ToyItem(0, 0, 0.35, 0, 0, 0)));
        Assert.Equal("blue cross", world.Prompt(new ToyItem(3, 2, 0.28, 0, 0, 0)));
        Assert.Equal((3, 2, -1), ToyWorld.Parse("blue cross"));
        Assert.Equal((0, -1, 0), ToyWorld.Parse("small circle"));
        var prompts = Enumerable.Range(0, 2000).Select(_ => world.TrainingPrompt(world.RandomItem(r), r)).ToList();
        Assert.InRange(prompts.Count(p => p.Length == 0), 150, 260);
        Assert.Equal(16, ToyWorld.ColourShapePrompts().Count);
        var tok = ClipTokenizer.ForWords(ToyWorld.Words, ToyDiffusionTrainer.ContextLength);
        Assert.Equal(6, tok.Length("small red striped circle"));
        Assert.Equal(8, tok.Encode("small red striped circle").Length);
    }

    [Fact]
    public void DiversityMetricsMatchHandComputations()
    {
        using var scope = NewDisposeScope();
        var same = ones(5, 8);
        Assert.Equal(0, Diversity.MeanPairwiseDistance(same), 6);
        var orthogonal = eye(4);
        Assert.Equal(1, Diversity.MeanPairwiseDistance(orthogonal), 6);
        // Two directions at 60°: cos = 0.5, so 1 − cos = 0.5 for the one pair.
        var pair = tensor(new float[,] { { 1, 0 }, { 0.5f, (float)Math.Sqrt(3) / 2 } });
        Assert.Equal(0.5, Diversity.MeanPairwiseDistance(pair), 5);
        using var g = new Generator(2);
        var x = randn([200, 6], generator: g);
        Assert.True(Diversity.Frechet(x, x) < 1e-6);
        var shift = tensor(new float[] { 1, 2, 0, 0, 0, 3 });
        Assert.Equal(14.0, Diversity.Frechet(x, x.Plus(shift)), 4);
        // Isotropic Gaussians: Tr(Σ₁ + Σ₂ − 2(Σ₁Σ₂)^½) = d(σ₁ − σ₂)² for sample covariances scaled by 2.
        Assert.Equal(Diversity.Frechet(x, x.mul(Scalars.Int(2))), Frechet(x, x.mul(Scalars.Int(2))), 4);
    }

    /// <summary>The Fréchet distance when one set is a scalar multiple of the other: (Σ₁Σ₂)^½ = c·Σ₁ exactly.</summary>
    private static double Frechet(Tensor x, Tensor y)
    {
        var c = (y[0, 0] / x[0, 0]).item<float>();
        var xc = (x - x.mean([0L])).to(ScalarType.Float64);
        var cov = matmul(xc.t(), xc).Over(x.shape[0] - 1);
        var dm = (x.mean([0L]) - y.mean([0L])).Squared().sum().item<float>();
        return dm + cov.trace().item<double>() * (1 + c * c - 2 * c);
    }

    [Fact]
    public void DistillationTargetMakesOneDdimStepLandOnTheTeacher()
    {
        using var scope = NewDisposeScope();
        var c = ToyDiffusionTrainer.Scheduler with { ClipSample = false };
        var ac = c.AlphasCumprod();
        var taus = Distillation.StudentTimesteps(c, 4);
        Assert.Equal([999, 749, 499, 249], taus);
        using var g = new Generator(3);
        var xk = randn([2, 3, 4, 4], generator: g);
        var xk1 = randn([2, 3, 4, 4], generator: g);
        for (var i = 0; i < 3; i++)
        {
            double a = ac[taus[i]], an = ac[taus[i + 1]];
            double al = Math.Sqrt(a), sg = Math.Sqrt(1 - a), aln = Math.Sqrt(an), sgn = Math.Sqrt(1 - an), ratio = sgn / sg;
            var target = (xk1 - xk.Times(ratio)).Over(aln - ratio * al);
            var eps = (xk - target.Times(al)).Over(sg);
            var landed = Distillation.DdimMove(xk, eps, a, an, c);
            Assert.True((landed - xk1).abs().max().item<float>() < 1e-3f);
        }
    }

    [Fact]
    public void HybridRunsTheBaseUntilTheHandoffAndCountsItsCost()
    {
        var world = new ToyWorld(16);
        using var baseModel = ToyDiffusionTrainer.Create(world, 4);
        using var student = Distillation.Clone(baseModel, baseModel.SchedulerConfig with { TimestepSpacing = "trailing" }, new JsonObject());
        using var scope = NewDisposeScope();
        var (images, plan) = HybridSampler.Sample(baseModel, student, ["red circle", "blue cross"], 5, 20, 3.0, 4, 1);
        Assert.Equal([2L, 3, 16, 16], images.shape);
        // Base leading 20 steps: 950, 900, …; the student's second timestep is 749, nearest 750 = index 4.
        Assert.Equal(4 * 2 + 3, plan.UnetCalls);
        var (_, reverse) = HybridSampler.Sample(baseModel, student, ["red circle"], 5, 20, 3.0, 4, 1, reverse: true);
        Assert.Equal(1 + (20 - 4) * 2, reverse.UnetCalls);
        // Handing over at the student's first step leaves the base nothing to run: refused.
        Assert.Throws<ArgumentOutOfRangeException>(() => HybridSampler.Sample(baseModel, student, ["red circle"], 5, 20, 3.0, 4, 0));
        Assert.Throws<ArgumentException>(() => HybridSampler.Sample(baseModel, student, ["red circle"], 5, 2, 3.0, 4, 1));

        // The student cloned from the base predicts exactly what the base predicts.
        using var noGrad = no_grad();
        var x = randn([1, 3, 16, 16]);
        var ctx = baseModel.EncodePrompts(["red circle"]);
        Assert.Equal(0f, (baseModel.Unet.Forward(x, tensor(500), ctx) - student.Unet.Forward(x, tensor(500), student.EncodePrompts(["red circle"]))).abs().max().item<float>());
    }

    [Fact]
    public void ScorerAndDenoiserLearnTheWorld()
    {
        var world = new ToyWorld(16);
        using var scorer = ToyScorer.Train(world, 1000, 1);
        var acc = scorer.Evaluate(world, 256);
        Assert.True(acc.Colour > 0.95, $"colour {acc.Colour}");
        Assert.True(acc.Shape > 0.5, $"shape {acc.Shape} (chance 0.25)");
        Assert.True(acc.SizeCorrelation > 0.7, $"size r {acc.SizeCorrelation}");
        var (pipe, losses) = ToyDiffusionTrainer.Train(new ToyDiffusionOptions { Steps = 120, Seed = 2 });
        using (pipe)
        {
            Assert.True(losses[0].Loss > 0.9, $"first loss {losses[0].Loss}");
            Assert.True(losses[^1].Loss < 0.2, $"last loss {losses[^1].Loss}");
            Assert.All(pipe.Unet.parameters(), p => Assert.False(p.requires_grad));
        }
    }
}
