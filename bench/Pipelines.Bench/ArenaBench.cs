using System.Diagnostics;

namespace Pipelines.Bench;

/// <summary>
/// What one glibc malloc arena buys a workflow: the CLI runs the same toy training workflow (a step on a thread-pool
/// thread) with glibc's per-thread arenas (MALLOC_ARENA_MAX=8) and with one arena from the
/// start (MALLOC_ARENA_MAX=1, as ./pipelines and scripts/test.sh set it), each into an empty store. Usage: ... -- arena [--scorer-steps 800] [--steps 200]
/// </summary>
public static class ArenaBench
{
    public static int Run(string[] args)
    {
        int Arg(string name, int fallback) => Array.IndexOf(args, name) is var i and >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1]) : fallback;
        var scorerSteps = Arg("--scorer-steps", 800);
        var steps = Arg("--steps", 200);
        var root = Path.Combine(Path.GetTempPath(), "pipelines-arena-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        try
        {
            var workflow = Path.Combine(root, "toy.json");
            File.WriteAllText(workflow, $$"""
                { "name": "arena-bench", "steps": [ { "id": "train", "activity": "diffusion.train-toy", "inputs": { "steps": {{steps}}, "scorerSteps": {{scorerSteps}}, "evalSamples": 1 } } ] }
                """);
            var many = Time(root, workflow, "many", new() { ["MALLOC_ARENA_MAX"] = "8" });
            var one = Time(root, workflow, "one", new() { ["MALLOC_ARENA_MAX"] = "1" });
            Console.WriteLine($"Allocator arenas: `pipelines run` of diffusion.train-toy (scorer {scorerSteps} steps, denoiser {steps} steps), cold, {Environment.ProcessorCount} cores, one run each");
            Console.WriteLine();
            Console.WriteLine("| measure | value |");
            Console.WriteLine("|---|---|");
            Console.WriteLine($"| per-thread arenas (MALLOC_ARENA_MAX=8) ÷ one arena (MALLOC_ARENA_MAX=1), wall | {many / one:F2} ({many:F1} s vs {one:F1} s) |");
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

    private static double Time(string root, string workflow, string name, Dictionary<string, string> env)
    {
        var psi = new ProcessStartInfo("dotnet") { WorkingDirectory = root, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "pipelines.dll"), "run", workflow, "--store", Path.Combine(root, name) })
        {
            psi.ArgumentList.Add(a);
        }
        psi.Environment.Remove("MALLOC_ARENA_MAX"); // the bench's own setting must not decide the comparison
        foreach (var (k, v) in env)
        {
            psi.Environment[k] = v;
        }
        var clock = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"pipelines run ({name}) failed: {stderr.Result}");
        }
        return clock.Elapsed.TotalSeconds;
    }
}
