using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using Pipelines.Models.Runtime;
using Xunit;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Tests.Diffusion;

/// <summary>Concept Sliders and SliderSpace: scale 0 is the model, training moves the slider, discovery aligns each slider with its component.</summary>
public sealed class SliderTests
{
    static SliderTests() => TorchRuntime.EnsureLoaded();

    [Fact]
    public void ATrainedSliderAtScaleZeroLeavesTheModelUnchanged()
    {
        var world = new ToyWorld(16);
        using var pipe = ToyDiffusionTrainer.Create(world, 7);
        using var scope = NewDisposeScope();
        using var g = new Generator(2);
        var x = randn([2, 3, 16, 16], generator: g);
        var ctx = pipe.EncodePrompts(["large red circle", "small red circle"]);
        var t = tensor(400f);
        var (slider, losses) = Sliders.Train(pipe, "red circle", "large red circle", "small red circle", "red circle",
            new SliderOptions { Iterations = 3, BatchSize = 2, Steps = 4, LearningRate = 1e-2, Seed = 1 });
        var plain = pipe.Unet.Forward(x, t, ctx);
        using (slider)
        {
            Assert.Equal(2, losses.Count);
            using var attached = slider.Attach();
            slider.Multiplier = 0;
            Assert.Equal(0f, (pipe.Unet.Forward(x, t, ctx) - plain).abs().max().item<float>());
            slider.Multiplier = 1;
            Assert.True((pipe.Unet.Forward(x, t, ctx) - plain).abs().max().item<float>() > 1e-6f);
            slider.Multiplier = 2;
            using var twice = pipe.Unet.Forward(x, t, ctx);
            slider.Multiplier = 1;
            Assert.True((twice - plain).abs().max().item<float>() > (pipe.Unet.Forward(x, t, ctx) - plain).abs().max().item<float>());
        }
        Assert.All(pipe.Unet.parameters(), p => Assert.False(p.requires_grad));
    }

    [Fact]
    public void PcaReturnsUnitComponentsInVarianceOrder()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(4);
        // Planted: variance 9 along e0, 1 along e1, little elsewhere.
        var x = randn([400, 5], generator: g) * tensor(new float[] { 3, 1, 0.1f, 0.1f, 0.1f });
        var (components, explained) = Sliders.Pca(x, 2);
        Assert.True(Math.Abs(components[0, 0].item<float>()) > 0.99f);
        Assert.True(Math.Abs(components[1, 1].item<float>()) > 0.99f);
        Assert.True(explained[0] > 0.8 && explained[1] > 0.05 && explained[0] > explained[1]);
        Assert.True(components.norm(1).Minus(1).abs().max().item<float>() < 1e-5f);
    }

    [Fact]
    public void SliderSpaceReturnsOneFrozenRankOneSliderPerComponent()
    {
        var world = new ToyWorld(16);
        using var pipe = ToyDiffusionTrainer.Create(world, 8);
        using var scorer = new ToyScorer(16);
        Pipelines.Models.Diffusion.DiffusionInit.Reset(scorer, 3);
        using var scope = NewDisposeScope();
        using var g = new Generator(2);
        var x = randn([1, 3, 16, 16], generator: g);
        var ctx = pipe.EncodePrompts(["red circle"]);
        var result = Sliders.Discover(pipe, scorer, "red circle", new SliderSpaceOptions { Samples = 12, Sliders = 3, Iterations = 12, LearningRate = 2e-2, SampleSteps = 3, Seed = 1 });
        try
        {
            Assert.Equal(3, result.Sliders.Count);
            Assert.Equal([3L, 64L], result.Components.shape);
            Assert.True(result.Components.norm(1).Minus(1).abs().max().item<float>() < 1e-5f);
            Assert.True(result.Explained.Zip(result.Explained.Skip(1)).All(p => p.First >= p.Second));
            Assert.Equal([10, 12], result.Losses.Select(l => l.Step));
            foreach (var slider in result.Sliders)
            {
                Assert.Equal("attn2-kv", slider.Target);
                Assert.Equal(1, slider.Rank);
                Assert.All(slider.parameters(), p => Assert.False(p.requires_grad));
            }
            // Detached after discovery: the UNet is the base model again.
            using var noGrad = no_grad();
            var plain = pipe.Unet.Forward(x, tensor(300f), ctx);
            using (result.Sliders[0].Attach())
            {
                result.Sliders[0].Multiplier = 0;
                Assert.Equal(0f, (pipe.Unet.Forward(x, tensor(300f), ctx) - plain).abs().max().item<float>());
                result.Sliders[0].Multiplier = 1;
                Assert.True((pipe.Unet.Forward(x, tensor(300f), ctx) - plain).abs().max().item<float>() > 1e-6f);
            }
        }
        finally
        {
            result.Sliders.ToList().ForEach(s => s.Dispose());
            result.Components.Dispose();
        }
    }

    [Fact]
    public void SliderSpacesFirstSliderMovesTheFirstComponent()
    {
        // The check: the first discovered slider's feature change (full sampling, seeds it never trained on)
        // points along the first principal component, and more along it than along the second. Measured 0.445 and
        // 0.279 at these settings.
        var world = new ToyWorld(16);
        using var pipe = ToyDiffusionTrainer.Create(world, 8);
        using var scorer = new ToyScorer(16);
        Pipelines.Models.Diffusion.DiffusionInit.Reset(scorer, 3);
        var options = new SliderSpaceOptions { Samples = 32, Sliders = 2, Iterations = 60, LearningRate = 3e-2, SampleSteps = 4, Seed = 2 };
        var result = Sliders.Discover(pipe, scorer, "red circle", options);
        try
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            var effect = Pipelines.Activities.Diffusion.SliderFiles.Effect(pipe, result.Sliders[0], scorer, "red circle", 16, options.SampleSteps, options.Guidance, 1.0, 12_345);
            double Cos(int j) => F.cosine_similarity(effect.unsqueeze(0), result.Components[j].unsqueeze(0), dim: 1).item<float>();
            var (first, second) = (Cos(0), Cos(1));
            // A random direction in the 64-d feature space has |cosine| about 0.13 with a given component.
            Assert.True(first > 0.3 && first > Math.Abs(second), $"slider 0 · PC0 = {first:F3}, · PC1 = {second:F3}");
        }
        finally
        {
            result.Sliders.ToList().ForEach(s => s.Dispose());
            result.Components.Dispose();
        }
    }
}

/// <summary>sliderspace.json through the engine, every step made tiny.</summary>
public sealed class SliderWorkflowTests
{
    static SliderWorkflowTests() => TorchRuntime.EnsureLoaded();

    [Fact]
    [Trait("Tier", "Slow")]
    public async Task SliderSpaceChainRunsThroughTheEngine()
    {
        using var ws = new Workspace();
        var doc = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(Pipelines.Tests.Workflow.SchemaTests.RepoRoot(), "workflows", "sliderspace.json")))!;
        var steps = doc["steps"]!.AsArray();
        System.Text.Json.Nodes.JsonObject Inputs(string id) => steps.Single(s => s!["id"]!.GetValue<string>() == id)!["inputs"]!.AsObject();
        Inputs("train")["scorerSteps"] = 2;
        Inputs("train")["evalSamples"] = 1;
        Inputs("discover")["samples"] = 8;
        Inputs("discover")["evalSeeds"] = 2;
        Inputs("size")["iterations"] = 2;
        Inputs("distill")["trajectories"] = 2;
        Inputs("distill")["teacherSubsteps"] = 2;
        foreach (var id in new[] { "onBase", "onStudent", "sizeOnBase", "sizeOnStudent" })
        {
            Inputs(id)["seeds"] = 1;
            Inputs(id)["scales"] = new System.Text.Json.Nodes.JsonArray(-1, 0, 1);
        }
        var run = await ws.RunAsync(doc.ToJsonString(), new Dictionary<string, string> { ["steps"] = "2", ["sliders"] = "2", ["iterations"] = "2", ["distillSteps"] = "2" });
        Assert.True(run.Status == Pipelines.Engine.Ledger.RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        string Output(string step, string port) => ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == step).Outputs[port].Digest);
        var metrics = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Output("discover", "metrics")))!;
        Assert.Equal(2, metrics["alignment"]!.AsArray().Count);
        Assert.Equal(2, metrics["pairwiseCosine"]![0]!.AsArray().Count);
        Assert.True(File.Exists(Path.Combine(Output("discover", "sliders"), "slider-01", "slider.safetensors")));
        var table = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Output("onStudent", "table")))!;
        Assert.Equal(["slider-00", "slider-01"], table["sliders"]!.AsObject().Select(k => k.Key));
        Assert.NotNull(table["sliders"]!["slider-00"]!["readings"]!["1"]!["featureChange"]);
        Assert.Equal(0.0, table["sliders"]!["slider-00"]!["readings"]!["0"]!["featureChange"]!.GetValue<double>());
        Assert.True(new FileInfo(Output("sizeOnBase", "grid")).Length > 100);
    }
}
