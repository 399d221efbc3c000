using System.Text.Json.Nodes;
using Pipelines.Activities.Erasure;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Running;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using Pipelines.Models.Runtime;
using Xunit;
using static TorchSharp.torch;

namespace Pipelines.Tests.Diffusion;

/// <summary>
/// Concept erasure for diffusion models: UCE's closed form against its least-squares definition, ESD's parameter
/// sets, the battery's invariants (completion at its ends, the noise probe at η = 0, B′ = B scoring as B) and the
/// concept-erasure chain through the engine.
/// </summary>
public sealed class DiffusionErasureTests
{
    static DiffusionErasureTests() => TorchRuntime.EnsureLoaded();

    [Fact]
    public void UceClosedFormEqualsItsLeastSquaresDefinition()
    {
        using var scope = NewDisposeScope();
        using var g = new Generator(11);
        var w = randn([6, 5], ScalarType.Float64, generator: g);
        var ce = randn([2, 5], ScalarType.Float64, generator: g);
        var targets = randn([2, 6], ScalarType.Float64, generator: g);
        var cp = randn([3, 5], ScalarType.Float64, generator: g);
        const double se = 1.0, sp = 0.7, lambda = 0.5;
        var edited = ConceptErasure.UceSolve(w, ce, targets, cp, se, sp, lambda);
        // argmin_W Σ s_e‖W c_i − v_i‖² + Σ s_p‖W c_j − W_old c_j‖² + λ‖W − W_old‖²: stack the rows and solve by least squares.
        var a = cat([ce * Math.Sqrt(se), cp * Math.Sqrt(sp), eye(5, dtype: ScalarType.Float64) * Math.Sqrt(lambda)], 0);
        var b = cat([targets * Math.Sqrt(se), matmul(cp, w.t()) * Math.Sqrt(sp), w.t() * Math.Sqrt(lambda)], 0);
        var reference = linalg.lstsq(a, b).Solution.t();
        Assert.True((edited - reference).abs().max().item<double>() < 1e-10, $"closed form vs least squares: {(edited - reference).abs().max().item<double>()}");
        // The gradient of the objective vanishes at the closed form.
        var grad = matmul(matmul(edited, ce.t()) - targets.t(), ce) * se + matmul(matmul(edited - w, cp.t()), cp) * sp + (edited - w) * lambda;
        Assert.True(grad.abs().max().item<double>() < 1e-10);
    }

    [Fact]
    public void UceSendsTheConceptToItsGuideAndKeepsThePreservedConcepts()
    {
        var world = new ToyWorld(16);
        using var pipe = ToyDiffusionTrainer.Create(world, 3);
        using var original = Distillation.Clone(pipe, pipe.SchedulerConfig, new JsonObject());
        var concept = ToyConcept.Parse("triangle");
        var erase = concept.Prompts();
        var preserve = concept.OtherPrompts();
        var report = ConceptErasure.Uce(pipe, erase, erase.Select(_ => "").ToList(), preserve, new UceOptions { Lambda = 0.01, PreserveScale = 10 });
        // The toy UNet has four cross-attentions (down_blocks.1, the mid block, up_blocks.0 twice): a to_k and a to_v each.
        Assert.Equal(2 * 4, report.Matrices);
        Assert.Equal(4, report.EraseVectors);
        Assert.True(report.EraseResidualAfter < 0.1 * report.EraseResidualBefore, $"erase residual {report.EraseResidualBefore} → {report.EraseResidualAfter}");
        Assert.True(report.PreserveDrift < 0.05, $"preserved outputs moved {report.PreserveDrift}");
        // Only attn2.to_k / to_v changed.
        var before = original.Unet.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in pipe.Unet.named_parameters())
        {
            var changed = (p - before[name]).abs().max().item<float>() > 0;
            Assert.Equal(name.Contains(".attn2.to_k.") || name.Contains(".attn2.to_v."), changed);
        }
    }

    [Theory]
    [InlineData("esd-x")]
    [InlineData("esd-u")]
    public void EsdTrainsOnlyItsParameterSet(string set)
    {
        var world = new ToyWorld(16);
        using var erased = ToyDiffusionTrainer.Create(world, 4);
        using var frozen = ToyDiffusionTrainer.Create(world, 4);
        var losses = ConceptErasure.Esd(erased, frozen, ["red circle"], new EsdOptions { Parameters = set, Iterations = 2, BatchSize = 2, Steps = 3, LearningRate = 1e-2, Seed = 1 });
        Assert.Equal(2, losses.Count);
        var trained = ConceptErasure.Select(erased.Unet, set).Select(p => p.Name).ToHashSet();
        Assert.NotEmpty(trained);
        var before = frozen.Unet.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in erased.Unet.named_parameters())
        {
            var moved = (p - before[name]).abs().max().item<float>() > 0;
            if (!trained.Contains(name))
            {
                Assert.False(moved, $"{set} changed {name}");
            }
            Assert.False(p.requires_grad);
        }
        Assert.Contains(erased.Unet.named_parameters(), p => trained.Contains(p.name) && (p.parameter - before[p.name]).abs().max().item<float>() > 0);
        if (set == "esd-u")
        {
            Assert.DoesNotContain(trained, n => n.Contains(".attn2.") || n.StartsWith("time_embedding.") || n.StartsWith("conv_out."));
        }
        else
        {
            Assert.All(trained, n => Assert.Contains(".attn2.", n));
        }
    }

    [Fact]
    public void CompletionAtItsEndsIsBaseOrErasedAndTheNoiseProbeAtEtaZeroIsPlainDdim()
    {
        var world = new ToyWorld(16);
        using var b = ToyDiffusionTrainer.Create(world, 5);
        using var e = ToyDiffusionTrainer.Create(world, 6);
        using var scorer = new ToyScorer(16);
        var settings = new DiffusionBatterySettings { Steps = 6, SeedsPerPrompt = 1, Seed = 2 };
        var battery = new DiffusionBattery(b, e, scorer, ToyConcept.Parse("red"), settings);
        var rows = battery.Rows();
        using var scope = NewDisposeScope();
        var all = battery.Complete(rows, settings.Steps);
        var none = battery.Complete(rows, 0);
        var sampleB = battery.Sample(b, rows);
        var sampleE = battery.Sample(e, rows);
        Assert.Equal(0f, (all - sampleB).abs().max().item<float>());
        Assert.Equal(0f, (none - sampleE).abs().max().item<float>());
        Assert.True((sampleB - sampleE).abs().max().item<float>() > 1e-3f);
        // P5's grid point η = 0 (absolute-value variant, any variance scale) is plain DDIM.
        var ddim = (DdimScheduler)Scheduler.Create("ddim", e.SchedulerConfig);
        ddim.SetTimesteps(settings.Steps);
        ddim.Eta = 0;
        ddim.VarianceScale = 1.03;
        ddim.AbsoluteVariance = true;
        var eta0 = battery.Sample(e, rows, scheduler: ddim, noiseSalt: 5);
        Assert.True((eta0 - sampleE).abs().max().item<float>() < 1e-6f);
    }

    [Fact]
    public void SimplexProjectionIsAProbabilityVectorClosestToItsInput()
    {
        using var scope = NewDisposeScope();
        var x = tensor(new float[] { 0.9f, 0.4f, -0.2f, 0.1f, 2.0f, -1.0f, 0.5f, 0.5f }).view(2, 4);
        var p = x.clone();
        DiffusionBattery.ProjectSimplex(p);
        Assert.True((p.sum(1) - 1).abs().max().item<float>() < 1e-6f);
        Assert.True(p.min().item<float>() >= 0);
        // Row 0: θ = 0.15 → [0.75, 0.25, 0, 0]; row 1: [1, 0, 0, 0].
        Assert.True((p - tensor(new float[] { 0.75f, 0.25f, 0, 0, 1, 0, 0, 0 }).view(2, 4)).abs().max().item<float>() < 1e-6f);
    }

    [Fact]
    [Trait("Tier", "Slow")]
    public async Task ConceptErasureChainRunsAndBPrimeEqualBScoresAsB()
    {
        using var ws = new Workspace();
        var doc = JsonNode.Parse(File.ReadAllText(Path.Combine(Pipelines.Tests.Workflow.SchemaTests.RepoRoot(), "workflows", "concept-erasure.json")))!;
        var steps = doc["steps"]!.AsArray();
        JsonObject Inputs(string id) => steps.Single(s => s!["id"]!.GetValue<string>() == id)!["inputs"]!.AsObject();
        Inputs("train")["scorerSteps"] = 400;
        Inputs("train")["evalSamples"] = 1;
        // Keep B′ = B (with every probe, cheaply) and UCE; the trained methods have their own tests.
        foreach (var id in new[] { "esdX", "esdU", "ga", "probeEsdX", "probeEsdU", "probeGa" })
        {
            steps.Remove(steps.Single(s => s!["id"]!.GetValue<string>() == id));
        }
        foreach (var id in new[] { "probeBase", "probeUce" })
        {
            var i = Inputs(id);
            i["probes"] = new JsonArray(DiffusionBattery.AllProbes.Select(p => (JsonNode)p).ToArray());
            i["inversionSteps"] = 4;
            i["prefixSteps"] = 4;
            i["classifierSteps"] = 20;
            i["guidanceScales"] = new JsonArray(5, 20);
            i["etas"] = new JsonArray(1.0, 1.5);
            i["varianceScales"] = new JsonArray(1.0);
            i["handOff"] = new JsonArray(1, 3);
        }
        Inputs("report")["matrices"] = new JsonArray(new JsonObject { ["from"] = "probeBase.matrix" }, new JsonObject { ["from"] = "probeUce.matrix" });
        var run = await ws.RunAsync(doc.ToJsonString(), new Dictionary<string, string> { ["steps"] = "200", ["seeds"] = "2", ["probeSteps"] = "8" });
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var matrix = JsonNode.Parse(File.ReadAllText(Path.Combine(ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == "report").Outputs["matrix"].Digest))))!;
        Assert.Equal("diffusion", matrix["modality"]!.GetValue<string>());
        Assert.Contains("guidance-based", matrix["rule"]!.GetValue<string>());
        var rows = matrix["methods"]!.AsArray();
        var same = rows.Single(r => r!["method"]!.GetValue<string>().StartsWith("none"))!;
        Assert.Equal("not erased", same["classification"]!.GetValue<string>());
        var probes = same["probes"]!.AsArray();
        Assert.Equal(DiffusionBattery.AllProbes.Count, probes.Count);
        // B′ = B: every probe scores B′ exactly as B (same weights, same seeds), so every defined normalised score is 1.
        Assert.All(probes, p => Assert.Equal(p!["base"]!.GetValue<double>(), p["raw"]!.GetValue<double>(), 9));
        Assert.NotNull(probes.Single(p => p!["probe"]!.GetValue<string>() == "standard")!["normalised"]);
        Assert.All(probes.Where(p => p!["normalised"] is not null), p => Assert.Equal(1.0, p!["normalised"]!.GetValue<double>(), 6));
        var uce = rows.Single(r => r!["method"]!.GetValue<string>() == "uce")!;
        Assert.Contains(uce["classification"]!.GetValue<string>(), new[] { "not erased", "guidance-based", "destruction-based", "mixed", "unclassified" });
        var html = File.ReadAllText(ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == "report").Outputs["report"].Digest));
        Assert.Contains("What B′ draws instead", html);
        Assert.Contains("Noise probe against its control", html);
    }
}
