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
        var a = cat([ce.Times(Math.Sqrt(se)), cp.Times(Math.Sqrt(sp)), eye(5, dtype: ScalarType.Float64).Times(Math.Sqrt(lambda))], 0);
        var b = cat([targets.Times(Math.Sqrt(se)), matmul(cp, w.t()).Times(Math.Sqrt(sp)), w.t().Times(Math.Sqrt(lambda))], 0);
        var reference = linalg.lstsq(a, b).Solution.t();
        Assert.True((edited - reference).abs().max().item<double>() < 1e-10, $"closed form vs least squares: {(edited - reference).abs().max().item<double>()}");
        // The gradient of the objective vanishes at the closed form.
        var grad = matmul(matmul(edited, ce.t()) - targets.t(), ce).Times(se).Plus(matmul(matmul(edited - w, cp.t()), cp).Times(sp)).Plus((edited - w).Times(lambda));
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
    public void TheGuidanceClassifierDoesNotDependOnTheGlobalGenerator()
    {
        // Two runs of P6 with libtorch's global generator advanced between them (as other steps in the process do)
        // train the same classifier: its init is seeded, not drawn from the global state.
        var world = new ToyWorld(16);
        using var b = ToyDiffusionTrainer.Create(world, 5);
        using var e = ToyDiffusionTrainer.Create(world, 6);
        using var scorer = new ToyScorer(16);
        var settings = new DiffusionBatterySettings { Steps = 2, SeedsPerPrompt = 1, Seed = 2, ClassifierSteps = 20, GuidanceScales = [5] };
        double Loss()
        {
            var r = new DiffusionBattery(b, e, scorer, ToyConcept.Parse("red"), settings).Run(["classifier-guidance"]).Single();
            return r.Details["finalLoss"]!.GetValue<double>();
        }
        var first = Loss();
        using (var draw = randn(1000))
        {
            Assert.True(draw.std().item<float>() > 0.5f);
        }
        Assert.Equal(first, Loss());
        Assert.True(first > 0 && double.IsFinite(first));
    }

    [Fact]
    public void SimplexProjectionIsAProbabilityVectorClosestToItsInput()
    {
        using var scope = NewDisposeScope();
        var x = tensor(new float[] { 0.9f, 0.4f, -0.2f, 0.1f, 2.0f, -1.0f, 0.5f, 0.5f }).view(2, 4);
        var p = x.clone();
        DiffusionBattery.ProjectSimplex(p);
        Assert.True(p.sum(1).Minus(1).abs().max().item<float>() < 1e-6f);
        Assert.True(p.min().item<float>() >= 0);
        // Row 0: θ = 0.15 → [0.75, 0.25, 0, 0]; row 1: [1, 0, 0, 0].
        Assert.True((p - tensor(new float[] { 0.75f, 0.25f, 0, 0, 1, 0, 0, 0 }).view(2, 4)).abs().max().item<float>() < 1e-6f);
    }

    [Fact]
    public void EveryProbeScoresBPrimeEqualBAsB()
    {
        var world = new ToyWorld(16);
        using var b = ToyDiffusionTrainer.Create(world, 5);
        using var same = Distillation.Clone(b, b.SchedulerConfig, b.Extra);
        using var scorer = new ToyScorer(16);
        Pipelines.Models.Diffusion.DiffusionInit.Reset(scorer, 1);
        using (no_grad())
        {
            // An untrained scorer that reads every image as red: B draws "red" at 1.0, so every score can be normalised.
            scorer.colour_head.bias!.copy_(tensor(new float[] { 50, 0, 0, 0 }));
        }
        var settings = new DiffusionBatterySettings
        {
            Steps = 4, SeedsPerPrompt = 1, Completion = [1, 2], NoiseEtas = [1.0, 1.5], NoiseScales = [1.02], GuidanceScales = [5], ClassifierSteps = 3,
            InversionSteps = 2, PrefixSteps = 2, Seed = 3,
        };
        var results = new DiffusionBattery(b, same, scorer, ToyConcept.Parse("red"), settings).Run(DiffusionBattery.AllProbes).ToList();
        Assert.Equal(DiffusionBattery.AllProbes.Count, results.Count);
        // Same weights, same seeds: each probe scores B′ exactly as B.
        Assert.All(results, r => Assert.Equal(r.Base, r.Raw));
        Assert.Equal(1.0, results.Single(r => r.Probe == "standard").Normalised);
        Assert.All(results.Where(r => r.Normalised is not null), r => Assert.Equal(1.0, r.Normalised!.Value, 9));
        Assert.Equal("not erased", ErasureMatrix.ClassifyDiffusion(results).Class);
        Assert.Equal(12, results.Single(r => r.Probe == "interference").Items);
        Assert.Equal(2, results.Single(r => r.Probe == "noise").N);
    }

    [Fact]
    public void TheDiffusionRuleSeparatesGuidanceFromDestruction()
    {
        ProbeResult P(string name, double raw) => new(name, "f", "m", raw, 1.0, 0.25, 1, raw, raw, 8, new JsonObject());
        Assert.Equal("guidance-based", ErasureMatrix.ClassifyDiffusion([P("standard", 0.25), P("completion", 0.9), P("noise", 0.3)]).Class);
        Assert.Equal("destruction-based", ErasureMatrix.ClassifyDiffusion([P("standard", 0.25), P("completion", 0.3), P("inpainting", 0.4), P("textual-inversion", 0.3)]).Class);
        Assert.Equal("mixed", ErasureMatrix.ClassifyDiffusion([P("standard", 0.25), P("completion", 0.3), P("adversarial-prefix", 0.9)]).Class);
        Assert.Equal("not erased", ErasureMatrix.ClassifyDiffusion([P("standard", 0.95), P("completion", 0.3)]).Class);
        Assert.Equal("unclassified", ErasureMatrix.ClassifyDiffusion([P("completion", 0.3)]).Class);
    }

    [Fact]
    [Trait("Tier", "Slow")]
    public async Task ConceptErasureChainRunsThroughTheEngine()
    {
        using var ws = new Workspace();
        var doc = JsonNode.Parse(File.ReadAllText(Path.Combine(Pipelines.Tests.Workflow.SchemaTests.RepoRoot(), "workflows", "concept-erasure.json")))!;
        var steps = doc["steps"]!.AsArray();
        JsonObject Inputs(string id) => steps.Single(s => s!["id"]!.GetValue<string>() == id)!["inputs"]!.AsObject();
        // The workflow as shipped, every step made tiny: the science is in the unit tests and the measured run.
        Inputs("train")["scorerSteps"] = 2;
        Inputs("train")["evalSamples"] = 1;
        foreach (var id in new[] { "esdX", "esdU", "ga" })
        {
            Inputs(id)["steps"] = 3;
            Inputs(id)["batchSize"] = 2;
            Inputs(id)["iterations"] = 2;
            Inputs(id)["checkpointEvery"] = 1;
        }
        foreach (var id in new[] { "probeBase", "probeEsdX", "probeEsdU", "probeUce", "probeGa" })
        {
            var i = Inputs(id);
            i["inversionSteps"] = 2;
            i["prefixSteps"] = 2;
            i["classifierSteps"] = 3;
            i["guidanceScales"] = new JsonArray(5);
            i["etas"] = new JsonArray(1.0, 1.5);
            i["varianceScales"] = new JsonArray(1.0);
            i["handOff"] = new JsonArray(1);
            if (id is "probeEsdU" or "probeUce" or "probeGa")
            {
                // ESD-x runs the whole battery; the others only what the matrix and report need to merge their rows.
                i["probes"] = new JsonArray("standard", "completion");
            }
        }
        var run = await ws.RunAsync(doc.ToJsonString(), new Dictionary<string, string> { ["steps"] = "2", ["seeds"] = "1", ["probeSteps"] = "3", ["iterations"] = "2" });
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var report = run.Steps.Single(s => s.StepId == "report");
        var matrix = JsonNode.Parse(File.ReadAllText(ws.Store.ObjectPath(report.Outputs["matrix"].Digest)))!;
        Assert.Equal("diffusion", matrix["modality"]!.GetValue<string>());
        Assert.Contains("guidance-based", matrix["rule"]!.GetValue<string>());
        var rows = matrix["methods"]!.AsArray();
        Assert.Equal(["none (B′ = B)", "esd-x", "esd-u", "uce", "ga"], rows.Select(r => r!["method"]!.GetValue<string>()));
        Assert.All(rows.Single(r => r!["method"]!.GetValue<string>().StartsWith("none"))!["probes"]!.AsArray(), p => Assert.Equal(p!["base"]!.GetValue<double>(), p["raw"]!.GetValue<double>()));
        Assert.Equal(DiffusionBattery.AllProbes.Count, rows[1]!["probes"]!.AsArray().Count);
        Assert.Equal(2, rows[1]!["dynamics"]!.AsArray().Count);
        var html = File.ReadAllText(ws.Store.ObjectPath(report.Outputs["report"].Digest));
        Assert.Contains("What B′ draws instead", html);
        Assert.Contains("Noise probe against its control", html);
        Assert.Contains("Erasure dynamics", html);
    }
}
