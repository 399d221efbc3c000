using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Pipelines.IntegrationTests;

namespace Pipelines.Bench;

/// <summary>
/// Server throughput and overhead, with real processes: (1) jobs per second through Hangfire + PostgreSQL for trivial
/// independent steps, with 1 and with 2 worker processes (the ratio); (2) the quickstart's end-to-end time through
/// the embedded server over the in-process CLI. Usage: ... -- server [--steps 60] [--quickstart-steps 200]
/// </summary>
public static class ServerBench
{
    private const string Key = "bench-key";

    public static int Run(string[] args)
    {
        int Arg(string name, int fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback;
        var steps = Arg("--steps", 60);
        var quickSteps = Arg("--quickstart-steps", 200);
        var root = Path.Combine(Path.GetTempPath(), "pipelines-bench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        try
        {
            using var pg = new PostgresServer();
            var one = JobsPerSecond(pg, root, steps, workers: 1);
            var two = JobsPerSecond(pg, root, steps, workers: 2);
            var (inProcess, server) = Quickstart(root, quickSteps);
            Console.WriteLine($"Server benchmark: {steps} trivial independent steps per run; quickstart with {quickSteps} training steps; {Environment.ProcessorCount} cores");
            Console.WriteLine();
            Console.WriteLine("| measure | value |");
            Console.WriteLine("|---|---|");
            Console.WriteLine($"| jobs/s, 1 worker process (PostgreSQL) | {one:F1} |");
            Console.WriteLine($"| jobs/s, 2 worker processes (PostgreSQL) | {two:F1} |");
            Console.WriteLine($"| 2 workers ÷ 1 worker | {two / one:F2} |");
            Console.WriteLine($"| quickstart through the embedded server ÷ in-process CLI (cold, end to end) | {server / inProcess:F2} ({server:F1} s vs {inProcess:F1} s) |");
            return 0;
        }
        finally
        {
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static string Dll => Path.Combine(AppContext.BaseDirectory, "pipelines.dll");

    private static Process Start(string dir, IDictionary<string, string> env, string until, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = dir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Dll);
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        foreach (var (k, v) in env)
        {
            psi.Environment[k] = v;
        }
        var p = Process.Start(psi)!;
        var ready = new TaskCompletionSource();
        void OnLine(object _, DataReceivedEventArgs e)
        {
            if (e.Data?.Contains(until, StringComparison.Ordinal) == true)
            {
                ready.TrySetResult();
            }
        }
        p.OutputDataReceived += OnLine;
        p.ErrorDataReceived += OnLine;
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        if (!ready.Task.Wait(TimeSpan.FromSeconds(60)))
        {
            p.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"pipelines {string.Join(' ', args)} did not start");
        }
        return p;
    }

    private static double WaitRun(HttpClient http, string url, string runId)
    {
        var clock = Stopwatch.StartNew();
        while (true)
        {
            var run = JsonNode.Parse(http.GetStringAsync($"{url}/api/runs/{runId}").Result)!;
            var status = run["run"]!["status"]!.GetValue<string>();
            if (status != "running")
            {
                if (status != "succeeded")
                {
                    throw new InvalidOperationException($"run {runId} {status}: {run["run"]!["error"]}");
                }
                return clock.Elapsed.TotalSeconds;
            }
            Thread.Sleep(50);
        }
    }

    private static string Submit(HttpClient http, string url, JsonNode definition)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, url + "/api/runs") { Content = JsonContent.Create(new { definition }) };
        request.Headers.Add("X-Api-Key", Key);
        using var response = http.Send(request);
        var body = response.Content.ReadAsStringAsync().Result;
        return response.IsSuccessStatusCode ? JsonNode.Parse(body)!["runId"]!.GetValue<string>() : throw new InvalidOperationException(body);
    }

    private static double JobsPerSecond(PostgresServer pg, string root, int steps, int workers)
    {
        var dir = Path.Combine(root, $"jobs-{workers}");
        Directory.CreateDirectory(dir);
        var url = $"http://127.0.0.1:{PostgresServer.FreePort()}";
        var env = new Dictionary<string, string>
        {
            ["PIPELINES_DATABASE"] = pg.CreateDatabase(), ["PIPELINES_STORE"] = Path.Combine(dir, "artifacts"), ["PIPELINES_API_KEY"] = Key,
        };
        var processes = new List<Process> { Start(dir, env, "Now listening", "serve", "--urls", url, "--workers", "0") };
        try
        {
            for (var w = 0; w < workers; w++)
            {
                processes.Add(Start(dir, env, "pipelines worker", "worker", "--queues", "default,gpu", "--workers", "1"));
            }
            using var http = new HttpClient();
            JsonNode Workflow(int salt) => new JsonObject
            {
                ["name"] = "jobs",
                ["steps"] = new JsonArray(Enumerable.Range(0, steps).Select(i => (JsonNode)new JsonObject
                {
                    ["id"] = $"s{i}", ["activity"] = "data.toy-task",
                    ["inputs"] = new JsonObject { ["task"] = "ioi", ["count"] = 1, ["seed"] = salt * 100_000 + i },
                }).ToArray()),
            };
            WaitRun(http, url, Submit(http, url, Workflow(1))); // warm-up: JIT, torch load, connections
            var seconds = WaitRun(http, url, Submit(http, url, Workflow(2)));
            return steps / seconds;
        }
        finally
        {
            foreach (var p in processes)
            {
                p.Kill(entireProcessTree: true);
                p.WaitForExit();
            }
        }
    }

    private static (double InProcess, double Server) Quickstart(string root, int trainingSteps)
    {
        var workflows = Path.Combine(Pipelines.Bench.Paths.RepoRoot(), "workflows");
        var cliDir = Path.Combine(root, "cli");
        var serverDir = Path.Combine(root, "server");
        foreach (var d in new[] { cliDir, serverDir })
        {
            Directory.CreateDirectory(Path.Combine(d, "workflows"));
            File.Copy(Path.Combine(workflows, "quickstart.json"), Path.Combine(d, "workflows", "quickstart.json"));
        }
        var clock = Stopwatch.StartNew();
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = cliDir, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { Dll, "run", "workflows/quickstart.json", "--set", $"steps={trainingSteps}" })
        {
            psi.ArgumentList.Add(a);
        }
        psi.Environment["PIPELINES_STORE"] = Path.Combine(cliDir, "artifacts");
        using (var p = Process.Start(psi)!)
        {
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
        }
        var inProcess = clock.Elapsed.TotalSeconds;

        var url = $"http://127.0.0.1:{PostgresServer.FreePort()}";
        var env = new Dictionary<string, string> { ["PIPELINES_STORE"] = Path.Combine(serverDir, "artifacts"), ["PIPELINES_API_KEY"] = Key };
        var server = Start(serverDir, env, "Now listening", "serve", "--urls", url);
        try
        {
            using var http = new HttpClient();
            clock.Restart();
            using var request = new HttpRequestMessage(HttpMethod.Post, url + "/api/runs")
            {
                Content = JsonContent.Create(new { workflow = "quickstart", parameters = new Dictionary<string, string> { ["steps"] = trainingSteps.ToString(System.Globalization.CultureInfo.InvariantCulture) } }),
            };
            request.Headers.Add("X-Api-Key", Key);
            using var response = http.Send(request);
            var runId = JsonNode.Parse(response.Content.ReadAsStringAsync().Result)!["runId"]!.GetValue<string>();
            WaitRun(http, url, runId);
            return (inProcess, clock.Elapsed.TotalSeconds);
        }
        finally
        {
            server.Kill(entireProcessTree: true);
            server.WaitForExit();
        }
    }
}

/// <summary>The repository root, found from the bench's output directory.</summary>
public static class Paths
{
    public static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Pipelines.sln")))
        {
            dir = dir.Parent;
        }
        return dir?.FullName ?? throw new InvalidOperationException("run the bench from the repository");
    }
}
