using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;

namespace Pipelines.IntegrationTests;

/// <summary>Runs the real <c>pipelines</c> program (the built pipelines.dll) as a child process.</summary>
public sealed class Cli : IDisposable
{
    public Cli()
    {
        Root = Path.Combine(Path.GetTempPath(), "pipelines-it", Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(Root);
    }

    public string Root { get; }
    public string Store => Path.Combine(Root, "artifacts");

    /// <summary>Extra environment for every process this starts.</summary>
    public Dictionary<string, string> Environment { get; } = new();

    public static string Dll => Path.Combine(AppContext.BaseDirectory, "pipelines.dll");

    public sealed record Result(int ExitCode, string Stdout, string Stderr)
    {
        public string All => Stdout + Stderr;
    }

    public ProcessStartInfo StartInfo(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = Root, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Dll);
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        psi.Environment["PIPELINES_STORE"] = Store;
        psi.Environment.Remove("PIPELINES_DEBUG");
        foreach (var (k, v) in Environment)
        {
            psi.Environment[k] = v;
        }
        return psi;
    }

    /// <summary>
    /// Runs the program to the end. It is stopped only when it prints nothing for 180 s (scaled by the machine's load,
    /// <see cref="TestTime"/>) or runs past 20 scaled minutes: a slow run that makes progress is never cut off.
    /// </summary>
    public Result Run(params string[] args)
    {
        using var p = Process.Start(StartInfo(args))!;
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        var last = Stopwatch.StartNew();
        void Collect(StringBuilder into, string? line)
        {
            if (line is null)
            {
                return;
            }
            lock (into)
            {
                into.AppendLine(line);
            }
            lock (last)
            {
                last.Restart();
            }
        }
        p.OutputDataReceived += (_, e) => Collect(stdout, e.Data);
        p.ErrorDataReceived += (_, e) => Collect(stderr, e.Data);
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        var total = Stopwatch.StartNew();
        var idleLimit = TestTime.Seconds(180);
        var totalLimit = TestTime.Seconds(1200);
        while (!p.WaitForExit(1000))
        {
            TimeSpan idle;
            lock (last)
            {
                idle = last.Elapsed;
            }
            if (idle > idleLimit || total.Elapsed > totalLimit)
            {
                p.Kill(entireProcessTree: true);
                throw new TimeoutException($"pipelines {string.Join(' ', args)} stopped: {(idle > idleLimit ? $"no output for {idle.TotalSeconds:F0} s" : $"running for {total.Elapsed.TotalSeconds:F0} s")}; output so far:\n{stdout}{stderr}");
            }
        }
        p.WaitForExit(); // drains the asynchronous readers
        return new Result(p.ExitCode, stdout.ToString(), stderr.ToString());
    }

    /// <summary>Starts the program and returns as soon as a line of its output satisfies <paramref name="until"/>.</summary>
    public (Process Process, StringBuilder Output) StartUntil(Func<string, bool> until, params string[] args)
    {
        var p = Process.Start(StartInfo(args))!;
        var output = new StringBuilder();
        var seen = new TaskCompletionSource();
        void OnLine(object _, DataReceivedEventArgs e)
        {
            if (e.Data is null)
            {
                return;
            }
            lock (output)
            {
                output.AppendLine(e.Data);
            }
            if (until(e.Data))
            {
                seen.TrySetResult();
            }
        }
        p.OutputDataReceived += OnLine;
        p.ErrorDataReceived += OnLine;
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        var finished = Task.WhenAny(seen.Task, p.WaitForExitAsync(), Task.Delay(TestTime.Seconds(120))).Result;
        if (!seen.Task.IsCompleted)
        {
            throw new InvalidOperationException($"the awaited line never came; output:\n{output}");
        }
        return (p, output);
    }

    public string Write(string name, string text)
    {
        var path = Path.Combine(Root, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    public string WriteDataset(string name, int count, int seed = 1)
    {
        var path = Path.Combine(Root, name);
        using var writer = new StreamWriter(path) { NewLine = "\n" };
        for (var i = 0; i < count; i++)
        {
            writer.WriteLine(new JsonObject { ["id"] = i, ["text"] = $"example {i * seed} with some words in it", ["label"] = i % 7, ["score"] = i * 0.5 }.ToJsonString());
        }
        return path;
    }

    /// <summary>The run's steps from <c>runs show --json</c>.</summary>
    public JsonNode Show(string runId)
    {
        var r = Run("runs", "show", runId, "--json");
        Assert.Equal(0, r.ExitCode);
        return JsonNode.Parse(r.Stdout)!;
    }

    /// <summary>Digest of every output, as "step.port" → digest.</summary>
    public Dictionary<string, string> Digests(string runId)
    {
        var result = new Dictionary<string, string>();
        foreach (var step in Show(runId)["steps"]!.AsArray())
        {
            foreach (var (port, output) in step!["outputs"]?.AsObject() ?? new JsonObject())
            {
                result[$"{step["id"]}.{port}"] = output!["digest"]!.GetValue<string>();
            }
        }
        return result;
    }

    public static string RunId(string output)
    {
        var m = System.Text.RegularExpressions.Regex.Match(output, @"run (\d{8}-\d{6}-[0-9a-f]{4})");
        Assert.True(m.Success, $"no run id in:\n{output}");
        return m.Groups[1].Value;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
