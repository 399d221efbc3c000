using System.Text.Json.Nodes;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Running;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Runtime;
using Xunit;

namespace Pipelines.Tests.Diffusion;

/// <summary>The diffusion activities through the engine: the diversity-distillation chain at toy scale, and sd-sample.json on a Stable-Diffusion-layout folder on disk.</summary>
public sealed class DiffusionWorkflowTests
{
    static DiffusionWorkflowTests() => TorchRuntime.EnsureLoaded();

    private static JsonNode Json(Workspace ws, RunResult run, string step, string port, string file = "") =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == step).Outputs[port].Digest), file)))!;

    [Fact]
    [Trait("Tier", "Slow")]
    public async Task DiversityDistillationChainRunsAtToyScale()
    {
        using var ws = new Workspace();
        // The workflow as shipped, made small: fewer scorer steps, checks, trajectories and DT samples.
        var doc = JsonNode.Parse(File.ReadAllText(Path.Combine(Pipelines.Tests.Workflow.SchemaTests.RepoRoot(), "workflows", "diversity-distillation.json")))!;
        JsonObject Inputs(string id) => doc["steps"]!.AsArray().Single(s => s!["id"]!.GetValue<string>() == id)!["inputs"]!.AsObject();
        Inputs("train")["scorerSteps"] = 150;
        Inputs("train")["evalSamples"] = 1;
        Inputs("distill")["trajectories"] = 2;
        Inputs("distill")["teacherSubsteps"] = 2;
        Inputs("dtBase")["samples"] = 1;
        Inputs("dtStudent")["samples"] = 1;
        var workflow = doc.ToJsonString();
        var run = await ws.RunAsync(workflow, new Dictionary<string, string> { ["steps"] = "30", ["distillSteps"] = "5", ["samples"] = "2" });
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var base20 = Json(ws, run, "base", "images", "samples.json");
        Assert.Equal(32, base20["samples"]!.AsArray().Count);
        Assert.Equal(40, base20["unetCalls"]!.GetValue<int>());
        Assert.NotNull(base20["scorer"]!["shape"]);
        Assert.NotNull(base20["samples"]![0]!["shape"]);
        var hybrid = Json(ws, run, "hybrid", "images", "samples.json");
        Assert.Equal("hybrid", hybrid["sampler"]!.GetValue<string>());
        Assert.Equal(4 * 2 + 3, hybrid["unetCalls"]!.GetValue<int>());
        Assert.Equal(4, Json(ws, run, "student", "images", "samples.json")["unetCalls"]!.GetValue<int>());
        var table = Json(ws, run, "diversity", "table");
        var sets = table["sets"]!.AsArray();
        Assert.Equal(["base", "base, 4 steps", "student", "hybrid", "reverse"], sets.Select(s => s!["sampler"]!.GetValue<string>()));
        Assert.All(sets, s => Assert.InRange(s!["diversity"]!.GetValue<double>(), 0, 2));
        var dt = Json(ws, run, "dtStudent", "dt");
        Assert.Equal(4, dt["perStep"]!.AsArray().Count);
        Assert.Equal(999, dt["perStep"]![0]!["timestep"]!.GetValue<double>());
        // The last step's prediction is the final image itself: distance 0.
        Assert.True(dt["perStep"]![3]!["distance"]!.GetValue<double>() < 1e-4);
        var student = ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == "distill").Outputs["model"].Digest);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(student, "model_index.json")))!;
        Assert.Equal(4, index["pipelines"]!["distilled"]!["steps"]!.GetValue<int>());
        Assert.Equal("trailing", JsonNode.Parse(File.ReadAllText(Path.Combine(student, "scheduler", "scheduler_config.json")))!["timestep_spacing"]!.GetValue<string>());
        var html = File.ReadAllText(ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == "report").Outputs["report"].Digest));
        Assert.Contains("The diversity-distillation finding", html);
        Assert.Contains("data:image/png;base64", html);
    }

    [Fact]
    public async Task SdSampleWorkflowSamplesAStableDiffusionLayoutFolder()
    {
        using var ws = new Workspace();
        using (var pipe = KnownConfigs.Tiny(3))
        {
            pipe.Save(Path.Combine(ws.Root, "sd"), fp16: true);
        }
        var workflow = File.ReadAllText(Path.Combine(Pipelines.Tests.Workflow.SchemaTests.RepoRoot(), "workflows", "sd-sample.json"));
        var run = await ws.RunAsync(workflow, new Dictionary<string, string> { ["path"] = "sd", ["prompt"] = "a photo of a red cat", ["steps"] = "3", ["samples"] = "2" });
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var samples = Json(ws, run, "sample", "images", "samples.json");
        Assert.Equal(["a photo of a red cat", "a photo of a red cat"], samples["samples"]!.AsArray().Select(s => s!["prompt"]!.GetValue<string>()));
        // PNDM (the folder's scheduler) makes one more UNet call than steps; guidance doubles them.
        Assert.Equal((3 + 1) * 2, samples["unetCalls"]!.GetValue<int>());
        Assert.Null(samples["fidelity"]);
        var images = Pipelines.Activities.Diffusion.ImageSet.ReadImages(ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == "sample").Outputs["images"].Digest), "images");
        Assert.Equal([2L, 3, 32, 32], images.shape);

        // A broken folder fails the load step with one line naming the file and tensor.
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(ws.Root, "sd", "unet", "config.json")))!;
        config["layers_per_block"] = 2;
        File.WriteAllText(Path.Combine(ws.Root, "sd", "unet", "config.json"), config.ToJsonString());
        var broken = await ws.RunAsync(workflow, new Dictionary<string, string> { ["path"] = "sd", ["steps"] = "3" });
        Assert.Equal(RunStatus.Failed, broken.Status);
        var error = broken.Steps.Single(s => s.StepId == "model").Error!;
        Assert.Contains("diffusion_pytorch_model.fp16.safetensors: missing tensor", error);
        Assert.DoesNotContain("\n", error);
    }
}
