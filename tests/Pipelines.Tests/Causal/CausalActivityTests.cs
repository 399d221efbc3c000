using System.Text.Json.Nodes;
using Pipelines.Activities.Causal;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Running;
using Xunit;

namespace Pipelines.Tests.Causal;

/// <summary>The causal activities end to end through the engine on tiny toy models: files, formats and one-line errors.</summary>
public sealed class CausalActivityTests : IDisposable
{
    private readonly Workspace _ws = new();

    private string Output(RunResult run, string step, string port) => _ws.Store.ObjectPath(run.Steps.Single(s => s.StepId == step).Outputs[port].Digest);

    private const string Belief = """
        { "name": "belief", "steps": [
          { "id": "data", "activity": "causal.toy-task", "inputs": { "task": "belief", "count": 16, "seed": 1 } },
          { "id": "train", "activity": "model.train-toy", "inputs": { "task": "belief", "steps": 20, "batchSize": 8, "dModel": 16, "dMlp": 32, "nHeads": 2, "nLayers": 2 } },
          { "id": "sweep", "activity": "patching.sweep", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.pairs" }, "hook": "resid-pre", "limit": 8 } },
          { "id": "iia", "activity": "causal.iia", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.counterfactuals" }, "variable": "payload", "positions": ["last", "query"], "filter": false } },
          { "id": "das", "activity": "causal.featurizer", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.counterfactuals" }, "variable": "binding", "kind": "das", "k": 2, "layers": [0], "positions": ["states"], "epochs": 1, "filter": false } },
          { "id": "iiaDas", "activity": "causal.iia", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.counterfactuals" }, "featurizer": { "from": "das.featurizer" }, "filter": false } },
          { "id": "export", "activity": "causal.export", "inputs": { "featurizer": { "from": "das.featurizer" }, "task": "toy" } },
          { "id": "report", "activity": "report.causal", "inputs": { "grids": [{ "from": "sweep.grid" }], "iia": [{ "from": "iia.results" }, { "from": "iiaDas.results" }] } } ] }
        """;

    [Fact]
    public async Task TheBeliefStudyRunsThroughTheEngineAndItsFilesReadBack()
    {
        var run = await _ws.RunAsync(Belief);
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Where(s => s.Error is not null).Select(s => $"{s.StepId}: {s.Error}")));
        var grid = PatchingGrid.Read(Output(run, "sweep", "grid"));
        Assert.Equal(2, grid.Layers.Count);
        Assert.Equal(12, grid.Positions.Count); // BOS + 11 words: "ann cup tea . bob jar gin . question ann cup"
        var iia = JsonNode.Parse(File.ReadAllText(Output(run, "iia", "results")))!;
        Assert.NotNull(iia["dataset"]!["payload"]!["model_unit"]!["ResidualStream(Layer-1,Token-query)"]!["payload"]!["average_score"]);
        var average = iia["pipelines"]!["average"]!.GetValue<double>();
        Assert.InRange(average, 0, 1);
        Assert.Equal(4, Iia.ReadUnits(iia).Count);
        using var das = Featurizer.Read(Output(run, "das", "featurizer"));
        var unit = Assert.Single(das.Units);
        Assert.Equal(("states", 2), (unit.Position, unit.K));
        Assert.True(unit.OrthogonalityError <= 1e-5);
        var folder = Path.Combine(Output(run, "export", "submission"), "toy_GPT2LMHeadModel_binding");
        Assert.True(File.Exists(Path.Combine(folder, "ResidualStream(Layer-0,Token-states)_featurizer.safetensors")));
        Assert.Equal("null", File.ReadAllText(Path.Combine(folder, "ResidualStream(Layer-0,Token-states)_indices")));
        Assert.True(File.Exists(Path.Combine(Output(run, "export", "submission"), "convert_to_mib.py")));
        var html = File.ReadAllText(Output(run, "report", "report"));
        Assert.Contains("Interchange intervention accuracy", html);
        Assert.Contains("data:image/png;base64,", html);

        // A featurizer handed over as a folder on disk scores exactly as the artifact did.
        var copy = Path.Combine(_ws.Root, "submitted");
        Directory.CreateDirectory(copy);
        foreach (var f in Directory.GetFiles(Output(run, "das", "featurizer")))
        {
            File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
        }
        var given = await _ws.RunAsync(Belief.Replace("""{ "from": "das.featurizer" }, "filter": false""", $$"""null, "featurizerPath": "{{copy}}", "filter": false""", StringComparison.Ordinal).Replace("\"featurizer\": null,", "", StringComparison.Ordinal));
        Assert.True(given.Status == RunStatus.Succeeded, string.Join("; ", given.Steps.Where(s => s.Error is not null).Select(s => $"{s.StepId}: {s.Error}")));
        var a = JsonNode.Parse(File.ReadAllText(Output(run, "iiaDas", "results")))!["pipelines"]!["average"]!.GetValue<double>();
        var b = JsonNode.Parse(File.ReadAllText(Output(given, "iiaDas", "results")))!["pipelines"]!["average"]!.GetValue<double>();
        Assert.Equal(a, b);
    }

    [Fact]
    public async Task TheVignetteStudyProbesTransplantsAndSteers()
    {
        var run = await _ws.RunAsync("""
            { "name": "vignette", "steps": [
              { "id": "data", "activity": "causal.toy-task", "inputs": { "task": "vignette", "count": 60, "seed": 1 } },
              { "id": "train", "activity": "model.train-toy", "inputs": { "task": "vignette", "steps": 20, "batchSize": 8, "dModel": 16, "dMlp": 32, "nHeads": 2, "nLayers": 2 } },
              { "id": "probe", "activity": "probe.train", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.probing" }, "layers": [0, 1], "positions": [-1], "lambdas": [0.01], "steps": 50 } },
              { "id": "transplant", "activity": "patching.generate", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.pairs" }, "layer": 1, "window": 1, "samples": 4 } },
              { "id": "transplant16", "activity": "patching.generate", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.pairs" }, "layer": 1, "window": 1, "samples": 4, "dtype": "bf16" } },
              { "id": "vector", "activity": "steering.vector", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.steering" }, "position": -2 } },
              { "id": "steer", "activity": "steering.evaluate", "inputs": { "model": { "from": "train.model" }, "vector": { "from": "vector.vector" }, "dataset": { "from": "data.probing" }, "scales": [0, 2], "limit": 16 } },
              { "id": "report", "activity": "report.causal", "inputs": { "probes": [{ "from": "probe.results" }] } } ] }
            """);
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Where(s => s.Error is not null).Select(s => $"{s.StepId}: {s.Error}")));
        var probes = ProbeResults.Read(Output(run, "probe", "results"));
        Assert.Equal(["female", "male"], probes.Classes);
        Assert.Equal(2, probes.Cells.Count);
        var transplant = JsonNode.Parse(File.ReadAllText(Output(run, "transplant", "results")))!;
        Assert.Equal(4, transplant["sets"]!.AsObject().Count); // presentation and risk, each ← female and ← male
        Assert.Equal(4, transplant["sets"]!["risk ← female"]!.AsArray().Count); // f = 0 (unpatched), 1, 2, 5
        var steering = JsonNode.Parse(File.ReadAllText(Output(run, "steer", "curve")))!;
        Assert.Equal(2, steering["layers"]!["0"]!["vector"]!.AsArray().Count);
        Assert.Equal(0.0, steering["layers"]!["0"]!["vector"]![0]!["kl"]!.GetValue<double>(), 6);
    }

    [Fact]
    public async Task BadCausalInputsFailWithOneLineNamingTheInput()
    {
        Directory.CreateDirectory(Path.Combine(_ws.Root, "empty"));
        var run = await _ws.RunAsync("""
            { "name": "bad", "steps": [
              { "id": "data", "activity": "causal.toy-task", "inputs": { "task": "belief", "count": 8, "seed": 1 } },
              { "id": "train", "activity": "model.train-toy", "inputs": { "task": "belief", "steps": 2, "batchSize": 2, "dModel": 16, "dMlp": 32, "nHeads": 2, "nLayers": 2 } },
              { "id": "sweep", "activity": "patching.sweep", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.pairs" }, "layers": [9] } },
              { "id": "iia", "activity": "causal.iia", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.counterfactuals" }, "variable": "nope" } },
              { "id": "given", "activity": "causal.iia", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.counterfactuals" }, "featurizerPath": "empty" } },
              { "id": "steer", "activity": "steering.vector", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "data.pairs" } } } ] }
            """);
        string Error(string step) => run.Steps.Single(s => s.StepId == step).Error!;
        Assert.StartsWith("inputs.layers: layer 9 does not exist; this model has layers 0..1", Error("sweep"));
        Assert.StartsWith("dataset: no rows for variable \"nope\"", Error("iia"));
        Assert.StartsWith("inputs.featurizerPath: no featurizer.json in the folder", Error("given"));
        Assert.StartsWith("inputs.positive: the rows have no \"positive\"/\"negative\" prompts", Error("steer"));
        foreach (var step in new[] { "sweep", "iia", "given", "steer" })
        {
            Assert.DoesNotContain("\n", Error(step));
            Assert.DoesNotContain(_ws.Root, Error(step));
        }
    }

    [Fact]
    public async Task MibMcqaRowsAreLabelledWithTheCausalModel()
    {
        static JsonObject Mcq(string[] labels, string[] texts, int key) => new()
        {
            ["prompt"] = $"Question: Coconuts are brown. What color are coconuts?\n{string.Join("\n", labels.Zip(texts, (l, t) => $"{l}. {t}"))}\nAnswer:",
            ["choices"] = new JsonObject { ["label"] = new JsonArray(labels.Select(l => (JsonNode?)l).ToArray()), ["text"] = new JsonArray(texts.Select(t => (JsonNode?)t).ToArray()) },
            ["answerKey"] = key,
        };
        var row = Mcq(["A", "B", "C", "D"], ["red", "orange", "brown", "purple"], 2);
        row["answerPosition_counterfactual"] = Mcq(["A", "B", "C", "D"], ["brown", "red", "orange", "purple"], 0);
        row["randomLetter_counterfactual"] = Mcq(["W", "X", "Y", "Z"], ["red", "orange", "brown", "purple"], 2);
        _ws.Write("mcqa.jsonl", row.ToJsonString() + "\n");
        var run = await _ws.RunAsync("""{ "name": "mib", "steps": [ { "id": "import", "activity": "causal.import-mib", "inputs": { "path": "mcqa.jsonl" } } ] }""");
        Assert.True(run.Status == RunStatus.Succeeded, run.Steps[0].Error);
        var rows = File.ReadAllLines(Output(run, "import", "dataset")).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();
        Assert.Equal(4, rows.Count);
        string Expected(string set, string variable) => rows.Single(r => r["set"]!.ToString() == set && r["variable"]!.ToString() == variable)["expected"]!.ToString();
        Assert.Equal(" A", Expected("answerPosition", "answer_pointer")); // the source's pointer (0) read in the base's symbols
        Assert.Equal(" A", Expected("answerPosition", "answer"));
        Assert.Equal(" C", Expected("randomLetter", "answer_pointer")); // same pointer, the base's letters
        Assert.Equal(" Y", Expected("randomLetter", "answer")); // the source's own answer
        var prompt = row["prompt"]!.ToString();
        Assert.Equal(prompt.IndexOf("\nC.", StringComparison.Ordinal) + 2, rows[0]["positions"]!["correct_symbol"]!["base"]![0]!["char"]!.GetValue<int>());
        Assert.Equal(" C", rows[0]["base_answer"]!.ToString());
    }

    public void Dispose() => _ws.Dispose();
}
