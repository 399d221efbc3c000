using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;

namespace Pipelines.IntegrationTests;

/// <summary>The real <c>pipelines serve</c> and <c>pipelines worker</c> processes, over HTTP.</summary>
public sealed class ServerTests : IDisposable
{
    private const string Key = "test-key-0123456789";
    private readonly Cli _cli = new();
    private readonly List<Process> _processes = [];
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(60) };

    /// <summary>Training (a few seconds), then evaluation: a step long enough to be interrupted.</summary>
    private const string Training = """
        {
          "name": "train-eval",
          "steps": [
            { "id": "train", "activity": "model.train-toy", "inputs": { "task": "greater-than", "steps": 300, "dModel": 32, "dMlp": 64, "nLayers": 1 } },
            { "id": "pairs", "activity": "data.toy-task", "inputs": { "task": "greater-than", "count": 32 } },
            { "id": "evaluate", "activity": "model.evaluate", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "pairs.dataset" } } }
          ]
        }
        """;

    private string Url { get; set; } = "";

    private Process Start(string until, params string[] args)
    {
        var (process, _) = _cli.StartUntil(line => line.Contains(until, StringComparison.Ordinal), args);
        _processes.Add(process);
        return process;
    }

    private void Serve(params string[] extra)
    {
        Url = $"http://127.0.0.1:{PostgresServer.FreePort()}";
        _cli.Environment["PIPELINES_API_KEY"] = Key;
        Start("Now listening", ["serve", "--urls", Url, .. extra]);
    }

    private HttpRequestMessage Request(HttpMethod method, string path, object? body = null, bool key = true)
    {
        var r = new HttpRequestMessage(method, Url + path);
        if (body is string text)
        {
            r.Content = new StringContent(text, Encoding.UTF8, "application/json");
        }
        else if (body is not null)
        {
            r.Content = JsonContent.Create(body);
        }
        if (key)
        {
            r.Headers.Add("X-Api-Key", Key);
        }
        return r;
    }

    private async Task<JsonNode> Json(HttpMethod method, string path, object? body = null, HttpStatusCode expect = HttpStatusCode.OK)
    {
        using var response = await _http.SendAsync(Request(method, path, body));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expect, $"{method} {path}: {(int)response.StatusCode} {text}");
        return JsonNode.Parse(text)!;
    }

    private async Task<string> Submit(string workflowJson)
    {
        var r = await Json(HttpMethod.Post, "/api/runs", new { definition = JsonNode.Parse(workflowJson) }, HttpStatusCode.Accepted);
        return r["runId"]!.GetValue<string>();
    }

    private async Task<JsonNode> WaitFor(string runId, Func<JsonNode, bool> condition, int seconds = 150)
    {
        // Progress-based: the limit counts from the last change of the run's state, scaled by the machine's load.
        var clock = Stopwatch.StartNew();
        var total = Stopwatch.StartNew();
        var limit = TestTime.Seconds(seconds);
        var previous = "";
        while (true)
        {
            var run = await Json(HttpMethod.Get, $"/api/runs/{runId}");
            if (condition(run))
            {
                return run;
            }
            var state = run.ToJsonString();
            if (state != previous)
            {
                previous = state;
                clock.Restart();
            }
            Assert.True(total.Elapsed < limit * 8, $"timed out after {total.Elapsed.TotalSeconds:F0} s; last state: {state}");
            Assert.True(clock.Elapsed < limit, $"timed out: no progress for {limit.TotalSeconds:F0} s; last state: {state}");
            await Task.Delay(250);
        }
    }

    private static string StepStatus(JsonNode run, string step) => run["steps"]!.AsArray().First(s => s!["id"]!.GetValue<string>() == step)!["status"]!.GetValue<string>();

    private static Dictionary<string, string> Digests(JsonNode run) => run["steps"]!.AsArray()
        .SelectMany(s => (s!["outputs"]?.AsObject() ?? []).Select(o => ($"{s["id"]}.{o.Key}", o.Value!["digest"]!.GetValue<string>())))
        .ToDictionary(p => p.Item1, p => p.Item2);

    /// <summary>The same workflow through the in-process CLI runner, in its own store: the reference digests.</summary>
    private Dictionary<string, string> InProcessDigests(string workflowJson)
    {
        using var other = new Cli();
        other.Write("w.json", workflowJson);
        var r = other.Run("run", "w.json");
        Assert.True(r.ExitCode == 0, r.All);
        return other.Digests(Cli.RunId(r.Stdout));
    }

    [Fact]
    public async Task EmbeddedServerRunsWorkflowsThroughTheApiAndRefusesUnauthorizedChanges()
    {
        Serve();
        var health = await Json(HttpMethod.Get, "/api/health");
        Assert.Equal("embedded", health["storage"]!.GetValue<string>());

        // Mutations without the key are refused; reads are not.
        using (var denied = await _http.SendAsync(Request(HttpMethod.Post, "/api/runs", new { workflow = "x" }, key: false)))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, denied.StatusCode);
        }
        using (var denied = await _http.SendAsync(Request(HttpMethod.Put, "/api/workflows/x", "{}", key: false)))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, denied.StatusCode);
        }
        using (var wrong = new HttpRequestMessage(HttpMethod.Delete, Url + "/api/workflows/x"))
        {
            wrong.Headers.Add("X-Api-Key", "not-the-key");
            Assert.Equal(HttpStatusCode.Unauthorized, (await _http.SendAsync(wrong)).StatusCode);
        }
        var activities = await Json(HttpMethod.Get, "/api/activities");
        Assert.Contains(activities.AsArray(), a => a!["type"]!.GetValue<string>() == "circuits.attribute");
        var openApi = await Json(HttpMethod.Get, "/openapi/v1.json");
        Assert.NotNull(openApi["paths"]!["/api/runs/{id}/events"]);
        // The document says how to authenticate and every status an endpoint answers.
        Assert.Equal("X-Api-Key", openApi["components"]!["securitySchemes"]!["ApiKey"]!["name"]!.GetValue<string>());
        var submit = openApi["paths"]!["/api/runs"]!["post"]!;
        Assert.Equal(["202", "400", "401", "404"], submit["responses"]!.AsObject().Select(r => r.Key).Order());
        Assert.Equal("ApiKey", submit["security"]![0]!.AsObject().Single().Key);
        Assert.Null(openApi["paths"]!["/api/runs"]!["get"]!["security"]);
        Assert.Equal(["202", "401", "409"], openApi["paths"]!["/api/runs/{id}/cancel"]!["post"]!["responses"]!.AsObject().Select(r => r.Key).Order());
        Assert.Null(openApi["paths"]!["/api/workflows/validate"]!["post"]!["responses"]!["401"]);

        // Workflows: saved byte for byte, validated with JSON paths, deleted; names cannot leave the directory.
        var text = "{\n  \"name\": \"toy\",\n  \"steps\": [ { \"id\": \"pairs\", \"activity\": \"data.toy-task\", \"inputs\": { \"task\": \"ioi\", \"count\": 8 } } ]\n}\n";
        var saved = await Json(HttpMethod.Put, "/api/workflows/toy", text, HttpStatusCode.Created);
        Assert.True(saved["valid"]!.GetValue<bool>());
        Assert.Equal(text, await _http.GetStringAsync(Url + "/api/workflows/toy"));
        Assert.Equal(text, File.ReadAllText(Path.Combine(_cli.Root, "workflows", "toy.json")));
        var invalid = await Json(HttpMethod.Post, "/api/workflows/validate", "{ \"name\": \"bad\", \"steps\": [ { \"id\": \"a\", \"activity\": \"data.toy-task\", \"inputs\": { \"task\": \"ioi\", \"count\": -1 } } ] }");
        Assert.False(invalid["valid"]!.GetValue<bool>());
        Assert.Equal("$.steps[0].inputs.count", invalid["diagnostics"]![0]!["jsonPath"]!.GetValue<string>());
        using (var escape = await _http.SendAsync(Request(HttpMethod.Put, "/api/workflows/..%2F..%2Fetc%2Fx", "{}")))
        {
            Assert.NotEqual(HttpStatusCode.Created, escape.StatusCode);
        }
        var escaping = await Json(HttpMethod.Post, "/api/runs", new { definition = JsonNode.Parse("""{ "name": "e", "steps": [ { "id": "l", "activity": "data.load-jsonl", "inputs": { "path": "/etc/passwd" } } ] }""") }, HttpStatusCode.BadRequest);
        Assert.Contains("outside", escaping["diagnostics"]![0]!["message"]!.GetValue<string>());

        // A run by name, to completion, with its events and artifacts.
        var runId = (await Json(HttpMethod.Post, "/api/runs", new { workflow = "toy" }, HttpStatusCode.Accepted))["runId"]!.GetValue<string>();
        var done = await WaitFor(runId, r => r["run"]!["status"]!.GetValue<string>() != "running");
        Assert.Equal("succeeded", done["run"]!["status"]!.GetValue<string>());
        var events = await _http.GetStringAsync($"{Url}/api/runs/{runId}/events");
        Assert.Contains("event: step", events);
        Assert.Contains("event: run", events);
        var digest = done["steps"]![0]!["outputs"]!["dataset"]!["digest"]!.GetValue<string>();
        using var download = await _http.GetAsync($"{Url}/api/artifacts/{digest}");
        Assert.Equal("application/x-ndjson", download.Content.Headers.ContentType!.MediaType);
        Assert.Equal(8, (await download.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.True(File.Exists(Path.Combine(_cli.Store, "runs", runId, "run.lock.json")));
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync(Url + "/hangfire")).StatusCode); // local requests see the dashboard
        // Re-run reuses the cache; reproduce recomputes without it and matches.
        var rerun = (await Json(HttpMethod.Post, $"/api/runs/{runId}/rerun", null, HttpStatusCode.Accepted))["runId"]!.GetValue<string>();
        var rerunDone = await WaitFor(rerun, r => r["run"]!["status"]!.GetValue<string>() != "running");
        Assert.Equal("cached", rerunDone["steps"]![0]!["status"]!.GetValue<string>());
        var reproduce = (await Json(HttpMethod.Post, $"/api/runs/{runId}/reproduce", null, HttpStatusCode.Accepted))["runId"]!.GetValue<string>();
        var reproduced = await WaitFor(reproduce, r => r["run"]!["status"]!.GetValue<string>() != "running");
        Assert.Equal("reproduce", reproduced["run"]!["kind"]!.GetValue<string>());
        Assert.Equal("computed", reproduced["steps"]![0]!["status"]!.GetValue<string>());
        Assert.Equal(Digests(done), Digests(reproduced));
        Assert.Equal(text, (await Json(HttpMethod.Get, $"/api/runs/{runId}"))["workflowText"]!.GetValue<string>());
        Assert.Equal(HttpStatusCode.NoContent, (await _http.SendAsync(Request(HttpMethod.Delete, "/api/workflows/toy"))).StatusCode);
    }

    [Fact]
    public async Task HostileRequestsAreRefusedAndBadFilesInTheWorkflowsDirectoryNeverStopTheServer()
    {
        // Files the server cannot schedule or read, saved before it starts: it reports them and starts anyway.
        Directory.CreateDirectory(Path.Combine(_cli.Root, "workflows"));
        File.WriteAllText(Path.Combine(_cli.Root, "workflows", "bad-cron.json"), """
            { "name": "bad-cron", "parameters": { "ckpt": { "type": "path" } },
              "triggers": [ { "id": "t", "watch": ".", "parameter": "ckpt", "schedule": "99 * * * *" } ],
              "steps": [ { "id": "p", "activity": "data.toy-task", "inputs": { "count": 2 } } ] }
            """);
        File.WriteAllBytes(Path.Combine(_cli.Root, "workflows", "bad-bytes.json"), [0x7B, 0xC3, 0x28, 0x7D]);
        File.WriteAllText(Path.Combine(_cli.Root, "workflows", "surrogate.json"), "{ \"name\": \"s\", \"description\": \"\\ud800\", \"steps\": [] }");
        Serve();
        var list = await Json(HttpMethod.Get, "/api/workflows");
        Assert.Equal(3, list.AsArray().Count);

        // validate: JSON only (a cross-origin form or text/plain post is refused), unauthenticated but bounded.
        using (var plain = new HttpRequestMessage(HttpMethod.Post, Url + "/api/workflows/validate") { Content = new StringContent("{}", Encoding.UTF8, "text/plain") })
        {
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, (await _http.SendAsync(plain)).StatusCode);
        }
        var chain = new StringBuilder("{ \"name\": \"c\", \"steps\": [");
        for (var i = 0; i < 60_000; i++)
        {
            chain.Append(i == 0 ? "" : ",").Append($"{{ \"id\": \"s{i}\", \"activity\": \"data.sample\", \"inputs\": {{ \"dataset\": {{ \"from\": \"s{(i + 1) % 60_000}.dataset\" }} }} }}");
        }
        var cycle = await Json(HttpMethod.Post, "/api/workflows/validate", chain.Append("] }").ToString());
        Assert.False(cycle["valid"]!.GetValue<bool>());
        Assert.Contains(cycle["diagnostics"]!.AsArray(), d => d!["message"]!.GetValue<string>().Contains("cycle between steps"));
        Assert.Equal("ok", (await Json(HttpMethod.Get, "/api/health"))["status"]!.GetValue<string>()); // still alive

        // No server path or link target in an answer.
        File.CreateSymbolicLink(Path.Combine(_cli.Root, "hosts.jsonl"), "/etc/hosts");
        var link = await Json(HttpMethod.Post, "/api/workflows/validate", """{ "name": "l", "steps": [ { "id": "l", "activity": "data.load-jsonl", "inputs": { "path": "hosts.jsonl" } } ] }""");
        var message = link["diagnostics"]![0]!["message"]!.GetValue<string>();
        Assert.Contains("outside the allowed roots", message);
        Assert.DoesNotContain("/etc", message);
        Assert.DoesNotContain(_cli.Root, link.ToJsonString());

        // PUT never persists what the server cannot read back.
        using (var surrogate = await _http.SendAsync(Request(HttpMethod.Put, "/api/workflows/lone", "{ \"name\": \"x\\ud800\", \"steps\": [] }")))
        {
            Assert.Equal(HttpStatusCode.BadRequest, surrogate.StatusCode);
        }
        using (var cron = await _http.SendAsync(Request(HttpMethod.Put, "/api/workflows/cron", File.ReadAllText(Path.Combine(_cli.Root, "workflows", "bad-cron.json")))))
        {
            Assert.Equal(HttpStatusCode.BadRequest, cron.StatusCode);
            Assert.Contains("invalid cron expression", await cron.Content.ReadAsStringAsync());
        }
        Assert.False(File.Exists(Path.Combine(_cli.Root, "workflows", "lone.json")));
        Assert.False(File.Exists(Path.Combine(_cli.Root, "workflows", "cron.json")));
    }

    [Fact]
    public async Task WithPostgresAWorkerKilledMidStepIsReplacedAndTheRunCompletesWithTheSameDigests()
    {
        using var pg = new PostgresServer();
        _cli.Environment["PIPELINES_DATABASE"] = pg.CreateDatabase();
        _cli.Environment["PIPELINES_INVISIBILITY_SECONDS"] = "5";
        Serve("--workers", "0"); // the server only schedules
        Assert.Equal("postgresql", (await Json(HttpMethod.Get, "/api/health"))["storage"]!.GetValue<string>());
        var first = Start("pipelines worker", "worker", "--queues", "default,gpu");
        var runId = await Submit(Training);
        await WaitFor(runId, r => StepStatus(r, "train") == "running");
        await Task.Delay(1000);
        first.Kill(entireProcessTree: true); // SIGKILL, mid-step
        first.WaitForExit();
        Start("pipelines worker", "worker", "--queues", "default,gpu");
        var done = await WaitFor(runId, r => r["run"]!["status"]!.GetValue<string>() != "running");
        Assert.Equal("succeeded", done["run"]!["status"]!.GetValue<string>());
        Assert.Equal(InProcessDigests(Training), Digests(done));
    }

    [Fact]
    public async Task WithPostgresRestartedMidRunTheRunFinishesOnceItIsBack()
    {
        using var pg = new PostgresServer();
        _cli.Environment["PIPELINES_DATABASE"] = pg.CreateDatabase();
        _cli.Environment["PIPELINES_INVISIBILITY_SECONDS"] = "10";
        Serve("--workers", "0");
        Start("pipelines worker", "worker", "--queues", "default,gpu");
        var runId = await Submit(Training);
        await WaitFor(runId, r => StepStatus(r, "train") == "running");
        pg.Stop();
        await Task.Delay(3000);
        pg.Start();
        var done = await WaitFor(runId, r => r["run"]!["status"]!.GetValue<string>() != "running");
        Assert.Equal("succeeded", done["run"]!["status"]!.GetValue<string>());
        Assert.Equal(InProcessDigests(Training), Digests(done));
    }

    [Fact]
    public async Task TheCheckpointWatcherStartsExactlyOneRunPerNewCompleteCheckpoint()
    {
        using var pg = new PostgresServer();
        _cli.Environment["PIPELINES_DATABASE"] = pg.CreateDatabase();
        Serve(); // PostgreSQL storage; this server also works on both queues
        Assert.Equal("postgresql", (await Json(HttpMethod.Get, "/api/health"))["storage"]!.GetValue<string>());
        var workflow = JsonNode.Parse(File.ReadAllText(Path.Combine(RepoPaths.Root(), "workflows", "checkpoint-watch.json")))!;
        workflow["triggers"]![0]!["stableSeconds"] = 1;
        workflow["steps"]![1]!["inputs"]!["count"] = 16;
        await Json(HttpMethod.Put, "/api/workflows/checkpoint-watch", workflow.ToJsonString(), HttpStatusCode.Created);
        // Training writes step-000020, -40 and -60; the watched directory receives them as a training run would.
        var train = _cli.Run("model", "train-toy", "--steps", "60", "--checkpoint-every", "20", "--out", "staging");
        Assert.True(train.ExitCode == 0, train.All);
        string Staged(string step, string file) => Path.Combine(_cli.Root, "staging", step, file);
        var watched = Path.Combine(_cli.Root, "checkpoints", "ioi");
        foreach (var step in new[] { "step-000020", "step-000040" })
        {
            Directory.CreateDirectory(Path.Combine(watched, step));
            foreach (var f in Directory.GetFiles(Path.Combine(_cli.Root, "staging", step)))
            {
                File.Copy(f, Path.Combine(watched, step, Path.GetFileName(f)));
            }
        }
        await Task.Delay(1500);

        async Task<JsonNode> Check() => await Json(HttpMethod.Post, "/api/workflows/checkpoint-watch/triggers/new-checkpoint/check");
        // The recurring job (every minute) may get to a checkpoint first: either way, each is started exactly once.
        var first = await Check();
        Assert.Equal(2, first["started"]!.AsArray().Count + first["known"]!.GetValue<int>());
        var again = await Check();
        Assert.Empty(again["started"]!.AsArray());
        Assert.Equal(2, again["known"]!.GetValue<int>());

        // A checkpoint still being written is not ready; once complete and settled it starts one run.
        var partial = Path.Combine(watched, "step-000060");
        Directory.CreateDirectory(partial);
        File.Copy(Staged("step-000060", "config.json"), Path.Combine(partial, "config.json"));
        var source = File.ReadAllBytes(Staged("step-000060", "model.safetensors"));
        File.WriteAllBytes(Path.Combine(partial, "model.safetensors"), source[..(source.Length / 2)]); // truncated
        await Task.Delay(1500);
        var waiting = await Check();
        Assert.Empty(waiting["started"]!.AsArray());
        Assert.Contains("step-000060", waiting["notReady"]!.AsArray().Select(n => n!.GetValue<string>()));
        File.WriteAllBytes(Path.Combine(partial, "model.safetensors"), source);
        File.Copy(Staged("step-000060", "tokenizer.json"), Path.Combine(partial, "tokenizer.json"));
        await Task.Delay(1500);
        var third = await Check();
        Assert.Equal(3, third["started"]!.AsArray().Count + third["known"]!.GetValue<int>());

        var runs = (await Json(HttpMethod.Get, "/api/runs")).AsArray().Where(r => r!["workflow"]!.GetValue<string>() == "checkpoint-watch")
            .Select(r => r!["id"]!.GetValue<string>()).ToList();
        Assert.Equal(3, runs.Count); // exactly one run per checkpoint
        var trends = new List<JsonNode>();
        foreach (var run in runs)
        {
            var done = await WaitFor(run, r => r["run"]!["status"]!.GetValue<string>() != "running");
            Assert.True(done["run"]!["status"]!.GetValue<string>() == "succeeded", done.ToJsonString());
            var trendDigest = done["steps"]!.AsArray().First(s => s!["id"]!.GetValue<string>() == "trend")!["outputs"]!["trend"]!["digest"]!.GetValue<string>();
            trends.Add(JsonNode.Parse(await _http.GetStringAsync($"{Url}/api/artifacts/{trendDigest}"))!);
        }
        // Each run's trend ends at its own checkpoint (the watcher binds it to `until`), however late the run started:
        // one, two and three checkpoints. The last has the overlap of each with the previous one.
        Assert.Equal([1, 2, 3], trends.Select(t => t["checkpoints"]!.AsArray().Count).Order());
        var trend = trends.Single(t => t["checkpoints"]!.AsArray().Count == 3);
        Assert.Equal(["step-000020", "step-000040", "step-000060"], trend["checkpoints"]!.AsArray().Select(c => c!["checkpoint"]!.GetValue<string>()));
        Assert.Null(trend["checkpoints"]![0]!["overlapWithPrevious"]);
        Assert.InRange(trend["checkpoints"]![2]!["overlapWithPrevious"]!.GetValue<double>(), 0, 1);
        // The checks are recurring Hangfire jobs, one per trigger, registered when the workflow was saved.
        using var dashboard = await _http.GetAsync(Url + "/hangfire/recurring");
        var recurring = await dashboard.Content.ReadAsStringAsync();
        Assert.Contains("watch:checkpoint-watch:new-checkpoint", recurring);
        Assert.Contains("watcher: workflows/checkpoint-watch.json, trigger new-checkpoint", recurring); // named as a watcher, not as a step
    }

    public void Dispose()
    {
        foreach (var p in _processes)
        {
            try
            {
                if (!p.HasExited)
                {
                    p.Kill(entireProcessTree: true);
                    p.WaitForExit(10_000);
                }
            }
            catch (InvalidOperationException)
            {
            }
        }
        _http.Dispose();
        _cli.Dispose();
    }
}
