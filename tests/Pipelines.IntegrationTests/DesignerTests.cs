using System.Diagnostics;
using System.Text.Json.Nodes;
using Pipelines.Tests.Crawl;

namespace Pipelines.IntegrationTests;

/// <summary>
/// The designer in a real browser: Debian's Chromium, headless, driven by playwright-core (web/designer/e2e) against a
/// real <c>pipelines serve</c> on 127.0.0.1. Screenshots go to the test output (bin/.../screenshots). Every scenario
/// fails on a page error or a console error.
/// </summary>
public sealed class DesignerTests : IDisposable
{
    private const string Key = "designer-key-42";
    private readonly Cli _cli = new();
    private LoopbackServer? _llm;
    private Process? _server;
    private string _url = "";

    private static string Screenshots => Directory.CreateDirectory(Path.Combine(AppContext.BaseDirectory, "screenshots")).FullName;

    private void Serve()
    {
        Directory.CreateDirectory(Path.Combine(_cli.Root, "workflows"));
        foreach (var f in new[] { "quickstart.json", "data-profile.json", "mib-circuit.json" })
        {
            File.Copy(Path.Combine(RepoPaths.Root(), "workflows", f), Path.Combine(_cli.Root, "workflows", f));
        }
        // The pairs data-profile and mib-circuit default to.
        var pairs = Path.Combine(_cli.Root, "datasets", "greater-than");
        Directory.CreateDirectory(pairs);
        foreach (var f in Directory.GetFiles(Path.Combine(RepoPaths.Root(), "datasets", "greater-than")))
        {
            File.Copy(f, Path.Combine(pairs, Path.GetFileName(f)));
        }
        _url = $"http://127.0.0.1:{PostgresServer.FreePort()}";
        _cli.Environment["PIPELINES_API_KEY"] = Key;
        (_server, _) = _cli.StartUntil(l => l.Contains("Now listening", StringComparison.Ordinal), "serve", "--urls", _url);
    }

    private (int ExitCode, string Output) Browser(string scenario, Dictionary<string, string>? env = null)
    {
        var script = Path.Combine(RepoPaths.Root(), "web", "designer", "e2e", "designer.mjs");
        var psi = new ProcessStartInfo("node") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = Path.GetDirectoryName(script)! };
        foreach (var a in new[] { script, scenario, _url, Key, Screenshots })
        {
            psi.ArgumentList.Add(a);
        }
        foreach (var (k, v) in env ?? [])
        {
            psi.Environment[k] = v;
        }
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(TestTime.Seconds(300)))
        {
            p.Kill(entireProcessTree: true);
            return (-1, "timed out\n" + stdout.Result + stderr.Result);
        }
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    [Fact]
    public void BuildTheQuickstartByDragAndDropSaveValidateRunAndSeeTheReport()
    {
        Serve();
        var (code, output) = Browser("quickstart");
        Assert.True(code == 0, output);
        Assert.Contains("PASS quickstart", output);
        // What the designer saved is a workflow the CLI runs as it stands.
        var saved = Path.Combine(_cli.Root, "workflows", "designed.json");
        Assert.True(File.Exists(saved));
        var validate = _cli.Run("validate", saved);
        Assert.True(validate.ExitCode == 0, validate.All);
        var steps = JsonNode.Parse(File.ReadAllText(saved))!["steps"]!.AsArray();
        Assert.Equal(7, steps.Count);
        Assert.Equal("trainToy.model", steps.First(s => s!["id"]!.GetValue<string>() == "attribute")!["inputs"]!["model"]!["from"]!.GetValue<string>());
        Assert.True(File.Exists(Path.Combine(Screenshots, "quickstart-report.png")));
    }

    [Fact]
    public void AnInvalidConnectionIsRefusedWithAReason()
    {
        Serve();
        var (code, output) = Browser("invalid-connection");
        Assert.True(code == 0, output);
    }

    [Fact]
    public void OpeningAndSavingAWorkflowLeavesItByteForByteAndAnEditChangesOnlyItsValue()
    {
        Serve();
        var file = Path.Combine(_cli.Root, "workflows", "quickstart.json");
        var before = File.ReadAllText(file);
        var (code, output) = Browser("round-trip", new() { ["WORKFLOW"] = "quickstart" });
        Assert.True(code == 0, output);
        Assert.Equal(before, File.ReadAllText(file));

        var compact = Path.Combine(_cli.Root, "workflows", "data-profile.json");
        var original = File.ReadAllLines(compact);
        (code, output) = Browser("round-trip", new() { ["WORKFLOW"] = "data-profile", ["EDIT"] = "trainFraction", ["EDIT_STEP"] = "split", ["EDIT_VALUE"] = "0.5" });
        Assert.True(code == 0, output);
        var edited = File.ReadAllLines(compact);
        Assert.Equal(original.Length, edited.Length);
        var changed = Enumerable.Range(0, original.Length).Where(i => original[i] != edited[i]).ToList();
        Assert.Single(changed); // the split step's line, and nothing else
        Assert.Equal(original[changed[0]].Replace("\"trainFraction\": 0.8", "\"trainFraction\": 0.5", StringComparison.Ordinal), edited[changed[0]]);
    }

    [Fact]
    public void ParametersFromTheRunDialogThenCancelResumeAndAReloadMidRun()
    {
        // A user's checkpoint and pairs in its vocabulary: a greater-than toy model and pairs of that task.
        var model = Path.Combine(_cli.Root, "checkpoints", "gt");
        Pipelines.Models.Training.ToyTrainer.Train(new Pipelines.Models.Training.ToyTrainingOptions { Task = "greater-than", Steps = 150, Seed = 2, EvalExamples = 16 }, model);
        Directory.CreateDirectory(Path.Combine(_cli.Root, "pairs"));
        Pipelines.Activities.Data.Jsonl.Write(Path.Combine(_cli.Root, "pairs", "gt.jsonl"),
            Pipelines.Models.Training.ToyTasks.Generate("greater-than", 400, 7).Select(e => e.ToJson()));
        Serve();
        var (code, output) = Browser("parameters-and-control", new() { ["MODEL"] = "checkpoints/gt", ["PAIRS"] = "pairs/gt.jsonl" });
        Assert.True(code == 0, output);
        Assert.Contains("PASS parameters-and-control", output);
        // The run the page started, cancelled, resumed and watched through a reload is one run, and it finished.
        var runs = _cli.Run("runs", "list", "--limit", "10");
        Assert.Single(runs.Stdout.Split('\n'), l => l.Contains("mib-circuit", StringComparison.Ordinal));
        Assert.True(File.Exists(Path.Combine(Screenshots, "parameters-and-control-reloaded.png")));
    }

    [Fact]
    public void NamesFollowSavesUnsavedEditsAskFirstAndParametersBind()
    {
        Serve();
        var (code, output) = Browser("names-and-prompts");
        Assert.True(code == 0, output);
        var saved = JsonNode.Parse(File.ReadAllText(Path.Combine(_cli.Root, "workflows", "ux-profile.json")))!;
        Assert.Equal("ux-profile", saved["name"]!.GetValue<string>());
        Assert.Equal("number", saved["parameters"]!["fraction"]!["type"]!.GetValue<string>());
        Assert.Equal(0.7, saved["parameters"]!["fraction"]!["default"]!.GetValue<double>());
        var split = saved["steps"]!.AsArray().First(s => s!["id"]!.GetValue<string>() == "split")!;
        Assert.Equal("fraction", split["inputs"]!["trainFraction"]!["param"]!.GetValue<string>());
        // What the designer saved, the CLI validates as it stands.
        var validate = _cli.Run("validate", Path.Combine(_cli.Root, "workflows", "ux-profile.json"));
        Assert.True(validate.ExitCode == 0, validate.All);
    }

    [Fact]
    public void TopicsOfARealCrawlAreAFilterableTable()
    {
        // A remote chat model on loopback answering from the scripted world (a real HTTP server).
        _llm = new LoopbackServer(r =>
        {
            var body = JsonNode.Parse(r.Body)!;
            var messages = body["messages"]!.AsArray();
            var user = messages.Last(m => m!["role"]!.GetValue<string>() == "user")!["content"]!.GetValue<string>();
            var prefill = body["continue_final_message"]?.GetValue<bool>() == true ? messages[^1]!["content"]!.GetValue<string>() : "";
            return new Reply(200, new JsonObject
            {
                ["choices"] = new JsonArray(new JsonObject { ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = ScriptedWorld.Respond(user, prefill) } }),
                ["usage"] = new JsonObject { ["prompt_tokens"] = 1, ["completion_tokens"] = 1 },
            }.ToJsonString());
        });
        Directory.CreateDirectory(Path.Combine(_cli.Root, "workflows"));
        File.WriteAllText(Path.Combine(_cli.Root, "workflows", "crawl-scripted.json"), $$"""
            { "name": "crawl-scripted", "description": "A crawl of a scripted chat model on loopback.", "steps": [ { "id": "crawl", "activity": "crawl.expand", "inputs": {
              "backend": "openai", "endpoint": "{{_llm.Root}}/v1", "remoteModel": "scripted", "apiKeyVariable": "PIPELINES_LLM_API_KEY",
              "languages": "english", "dedup": "exact", "steps": 8, "warmupSteps": 1, "refusalSamples": 2, "seed": 3 } } ] }
            """);
        _cli.Environment["PIPELINES_LLM_API_KEY"] = "sk-designer-test";
        Serve();
        var (code, output) = Browser("topics");
        Assert.True(code == 0, output);
        Assert.True(_llm.Requests.Count > 0);
    }

    public void Dispose()
    {
        _llm?.Dispose();
        if (_server is { HasExited: false })
        {
            _server.Kill(entireProcessTree: true);
            _server.WaitForExit(10_000);
        }
        _cli.Dispose();
    }
}
