using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.DependencyInjection;
using Pipelines.Activities;
using Pipelines.Activities.Data;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;
using Pipelines.Engine.Running;
using Pipelines.Engine.Validation;

namespace Pipelines.Bench;

/// <summary>
/// Engine overhead on a workflow of many trivial steps: one tiny load, then N independent data.sample steps.
/// Reports ratios measured in one run (the machines are shared and noisy; absolute times are for context only).
/// Usage: dotnet run -c Release --project bench/Pipelines.Bench [-- --steps 200 --parallel 1]; `-- models` for the model runtime.
/// </summary>
public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        if (args.FirstOrDefault() == "models")
        {
            return ModelBench.Run(args.Skip(1).ToArray());
        }
        if (args.FirstOrDefault() == "arena")
        {
            return ArenaBench.Run(args.Skip(1).ToArray());
        }
        if (args.FirstOrDefault() == "server")
        {
            return ServerBench.Run(args);
        }
        if (args.FirstOrDefault() == "crawl")
        {
            return CrawlBench.Run(args.Skip(1).ToArray());
        }
        if (args.FirstOrDefault() == "erasure")
        {
            return ErasureBench.Run(args.Skip(1).ToArray());
        }
        if (args.FirstOrDefault() == "causal")
        {
            return CausalBench.Run(args.Skip(1).ToArray());
        }
        if (args.FirstOrDefault() == "device")
        {
            return DeviceBench.Run(args.Skip(1).ToArray());
        }
        if (args.FirstOrDefault() == "performance")
        {
            return PerformanceBench.Run(args.Skip(1).ToArray());
        }
        if (args.FirstOrDefault() == "diffusion-erasure")
        {
            return DiffusionErasureBench.Run(args.Skip(1).ToArray());
        }
        if (args.FirstOrDefault() == "diffusion")
        {
            return DiffusionBench.Run(args.Skip(1).ToArray());
        }
        if (args.FirstOrDefault() == "gc-race")
        {
            return GcRaceStress.Run(args.Skip(1).ToArray());
        }
        if (args.FirstOrDefault() == "attribution")
        {
            return AttributionBench.Run(args.Skip(1).ToArray());
        }
        var steps = Arg(args, "--steps", 200);
        var parallel = Arg(args, "--parallel", 1);
        var root = Path.Combine(Path.GetTempPath(), "pipelines-bench-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        try
        {
            return await Run(root, steps, parallel);
        }
        finally
        {
            Directory.Delete(root, recursive: true);
        }
    }

    private static async Task<int> Run(string root, int steps, int parallel)
    {
        using var services = new ServiceCollection().AddPipelinesActivities().BuildServiceProvider();
        var registry = services.GetRequiredService<ActivityRegistry>();
        var data = Path.Combine(root, "data.jsonl");
        File.WriteAllLines(data, Enumerable.Range(0, 20).Select(i => $"{{\"id\": {i}, \"text\": \"row {i}\"}}"));

        var json = new StringBuilder("""{ "name": "bench", "steps": [ { "id": "load", "activity": "data.load-jsonl", "inputs": { "path": "data.jsonl" } }""");
        for (var i = 0; i < steps; i++)
        {
            json.Append($$""", { "id": "s{{i}}", "activity": "data.sample", "inputs": { "dataset": { "from": "load.dataset" }, "count": 5, "seed": {{i}} } }""");
        }
        json.Append("] }");
        var text = json.ToString();
        var plan = new WorkflowCompiler(registry).CompileText(text, "bench.json", new Dictionary<string, string>(), new PathPolicy(root, []));

        var store = new ArtifactStore(Path.Combine(root, "artifacts"));
        using var ledger = new SqliteRunLedger(Path.Combine(store.Root, "ledger.db"));
        var runner = new InProcessRunner(store, ledger, services.GetRequiredService<ExecutionEnvironment>(), services);
        var options = new RunOptions { WorkflowFile = "bench.json", WorkflowText = text, BaseDirectory = root, MaxParallel = parallel };

        // The activity's own work, called directly on the same input, same number of times.
        var loadDigest = Hashing.File(data);
        var sample = (IActivity)registry.Find("data.sample")!;
        var warm = new Stopwatch();
        var own = Stopwatch.StartNew();
        for (var i = 0; i < steps; i++)
        {
            var scratch = store.CreateScratch("bench");
            var input = InputBinder.Bind(sample.InputType,
                new Dictionary<string, System.Text.Json.Nodes.JsonNode?> { ["count"] = 5, ["seed"] = i },
                new Dictionary<string, object> { ["dataset"] = new Artifact(loadDigest, ArtifactKinds.Dataset, "application/x-ndjson", data, 0, false, "d.jsonl") });
            await sample.ExecuteAsync(input, new Pipelines.Engine.Activities.ActivityContext { RunId = "bench", StepId = "s", Descriptor = sample.Descriptor, WorkDirectory = scratch });
            Directory.Delete(scratch, true);
        }
        own.Stop();

        var computedClock = Stopwatch.StartNew();
        var computed = await runner.RunAsync(plan, options);
        computedClock.Stop();
        var cachedClock = Stopwatch.StartNew();
        var cached = await runner.RunAsync(plan, options);
        cachedClock.Stop();
        if (computed.Computed != steps + 1 || cached.Cached != steps + 1)
        {
            Console.Error.WriteLine($"unexpected: {computed.Computed} computed, then {cached.Cached} cached");
            return 1;
        }

        var ownPerStep = own.Elapsed.TotalMilliseconds / steps;
        var computedPerStep = computedClock.Elapsed.TotalMilliseconds / (steps + 1);
        var overheadPerStep = computedPerStep - ownPerStep;
        var cachedPerStep = cachedClock.Elapsed.TotalMilliseconds / (steps + 1);
        Console.WriteLine($"Engine overhead: {steps + 1} trivial steps (1 load + {steps} data.sample), parallel {parallel}, one process, one run");
        Console.WriteLine();
        Console.WriteLine("| measure                                   | per step (ms) | ratio                          |");
        Console.WriteLine("|-------------------------------------------|---------------|--------------------------------|");
        Console.WriteLine($"| activity's own work (called directly)     | {ownPerStep,13:0.000} | 1.00 (reference)               |");
        Console.WriteLine($"| computed step, through the engine         | {computedPerStep,13:0.000} | {computedPerStep / ownPerStep,5:0.00} × own work              |");
        Console.WriteLine($"| engine overhead per computed step         | {overheadPerStep,13:0.000} | {overheadPerStep / ownPerStep,5:0.00} × own work              |");
        Console.WriteLine($"| cached step (key, lookup, verify, ledger) | {cachedPerStep,13:0.000} | {cachedPerStep / computedPerStep,5:0.00} × a computed step        |");
        return 0;
    }

    private static int Arg(string[] args, string name, int fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length && int.TryParse(args[i + 1], out var v) ? v : fallback;
    }
}
