using System.CommandLine;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Definitions;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;
using Pipelines.Engine.Running;
using Pipelines.Engine.Validation;
using Spectre.Console;

namespace Pipelines.Host.Cli;

/// <summary><c>run</c>, <c>validate</c>, <c>resume</c> and <c>reproduce</c>.</summary>
public static class RunCommands
{
    public static Command Run(GlobalOptions g)
    {
        var workflow = new Argument<string>("workflow") { Description = "The workflow JSON file" };
        var set = SetOption();
        var parallel = ParallelOption();
        var noCache = new Option<bool>("--no-cache") { Description = "Recompute every step (results still enter the store)" };
        var allowRoot = AllowRootOption();
        var command = new Command("run", "Run a workflow: cached steps are reused, the rest computed") { workflow, set, parallel, noCache, allowRoot };
        command.SetAction((p, ct) => g.Execute(p, async services =>
        {
            var file = p.GetValue(workflow)!;
            var prepared = Prepare(services, file, p.GetValue(set) ?? [], p.GetValue(allowRoot) ?? []);
            if (prepared.Error is { } error)
            {
                return error;
            }
            var options = new RunOptions
            {
                WorkflowFile = Path.GetFullPath(file),
                WorkflowText = prepared.Text!,
                Overrides = prepared.Overrides!,
                BaseDirectory = prepared.Policy!.BaseDirectory,
                AllowedRoots = prepared.Policy.Roots,
                MaxParallel = p.GetValue(parallel),
                UseCache = !p.GetValue(noCache),
            };
            return await Execute(services, prepared.Plan!, options, p.GetValue(g.Verbose), ct);
        }));
        return command;
    }

    public static Command Validate(GlobalOptions g)
    {
        var workflow = new Argument<string>("workflow") { Description = "The workflow JSON file" };
        var set = SetOption();
        var allowRoot = AllowRootOption();
        var command = new Command("validate", "Check a workflow without running it: structure, activities, ports, types, references, cycles, paths") { workflow, set, allowRoot };
        command.SetAction((p, ct) => g.Execute(p, services =>
        {
            var prepared = Prepare(services, p.GetValue(workflow)!, p.GetValue(set) ?? [], p.GetValue(allowRoot) ?? []);
            if (prepared.Error is { } error)
            {
                return Task.FromResult(error);
            }
            var plan = prepared.Plan!;
            AnsiConsole.MarkupLine($"[green]✔ valid[/]: {Markup.Escape(plan.Definition.Name)}, {plan.Steps.Count} steps in order: {Markup.Escape(string.Join(" → ", plan.Steps.Select(s => s.Id)))}");
            return Task.FromResult(ExitCodes.Ok);
        }));
        return command;
    }

    public static Command Resume(GlobalOptions g)
    {
        var runId = new Argument<string>("run") { Description = "The run to resume (see `pipelines runs list`)" };
        var parallel = ParallelOption();
        var command = new Command("resume", "Finish an interrupted or failed run under its own id, reusing every step that finished") { runId, parallel };
        command.SetAction((p, ct) => g.Execute(p, async services =>
        {
            var run = await services.Ledger.GetRunAsync(p.GetValue(runId)!, ct);
            if (run is null)
            {
                return Output.Invalid($"no run \"{p.GetValue(runId)}\" in the ledger at {services.StoreRoot}");
            }
            if (run.Status == RunStatus.Succeeded)
            {
                AnsiConsole.MarkupLine($"run {run.Id} already succeeded; resuming it reuses every step.");
            }
            var (plan, error) = Recompile(services, run);
            if (plan is null)
            {
                return error;
            }
            var options = Options(run) with { RunId = run.Id, Kind = RunKind.Resume, MaxParallel = p.GetValue(parallel) };
            return await Execute(services, plan, options, p.GetValue(g.Verbose), ct);
        }));
        return command;
    }

    public static Command Reproduce(GlobalOptions g)
    {
        var runId = new Argument<string>("run") { Description = "The run to reproduce" };
        var command = new Command("reproduce", "Recompute a run without the cache and compare every output digest with the original") { runId };
        command.SetAction((p, ct) => g.Execute(p, async services =>
        {
            var original = await services.Ledger.GetRunAsync(p.GetValue(runId)!, ct);
            if (original is null)
            {
                return Output.Invalid($"no run \"{p.GetValue(runId)}\" in the ledger at {services.StoreRoot}");
            }
            var (plan, error) = Recompile(services, original);
            if (plan is null)
            {
                return error;
            }
            var options = Options(original) with { Kind = RunKind.Reproduce, OriginRunId = original.Id, UseCache = false };
            var observer = new ConsoleObserver(p.GetValue(g.Verbose));
            var result = await observer.ShowAsync(() => services.Runner.RunAsync(plan, options, observer, ct));
            var rows = Reproduction.Compare(await services.Ledger.GetStepsAsync(original.Id, ct), await services.Ledger.GetStepsAsync(result.RunId, ct));
            var table = new Table().Title($"reproduce {original.Id} → {result.RunId}")
                .AddColumns("Step", "Output", "Original", "Reproduced", "Match");
            var mismatches = rows.Count(r => !r.Match);
            foreach (var r in rows)
            {
                table.AddRow(Markup.Escape(r.StepId), Markup.Escape(r.Output ?? ""), r.Original is null ? "[grey]—[/]" : Hashing.Short(r.Original),
                    r.Reproduced is null ? "[grey]—[/]" : Hashing.Short(r.Reproduced),
                    r.Match ? "[green]✔ equal[/]" : r.Output is null ? $"[red]✘ {Markup.Escape(r.ReproducedStatus)}[/]" : "[red]✘ MISMATCH[/]");
            }
            AnsiConsole.Write(table);
            if (result.Status != RunStatus.Succeeded)
            {
                AnsiConsole.MarkupLine($"[red]✘ the reproduction run {result.RunId} {result.Status.ToString().ToLowerInvariant()}[/]");
                return ExitCodes.Failed;
            }
            if (mismatches > 0)
            {
                AnsiConsole.MarkupLine($"[red]✘ {mismatches} output(s) differ from run {original.Id}[/]");
                return ExitCodes.Failed;
            }
            AnsiConsole.MarkupLine($"[green]✔ reproduced: every output digest equals run {original.Id}'s[/]");
            return ExitCodes.Ok;
        }));
        return command;
    }

    private static async Task<int> Execute(CliServices services, ExecutionPlan plan, RunOptions options, bool verbose, CancellationToken ct)
    {
        var observer = new ConsoleObserver(verbose);
        var result = await observer.ShowAsync(() => services.Runner.RunAsync(plan, options, observer, ct));
        Summary(result);
        return result.Status == RunStatus.Succeeded ? ExitCodes.Ok : ExitCodes.Failed;
    }

    /// <summary>The end-of-run table: every step, computed or cached, its time and its output digests.</summary>
    public static void Summary(RunResult result)
    {
        var table = new Table().AddColumns("Step", "Activity", "Status", "Time", "Outputs (sha256)");
        foreach (var s in result.Steps)
        {
            table.AddRow(Markup.Escape(s.StepId), Markup.Escape(s.Activity), Output.Status(s.Status), Output.Duration(s.Duration), Markup.Escape(Output.Digests(s.Outputs)));
        }
        AnsiConsole.Write(table);
        foreach (var s in result.Steps.Where(s => s.Status == StepStatus.Failed))
        {
            Output.Error.MarkupLine($"[red]✘ step {Markup.Escape(s.StepId)} failed:[/] {Markup.Escape(s.Error ?? "")}");
        }
        var verdict = result.Status switch
        {
            RunStatus.Succeeded when result.Computed == 0 => $"[green]✔ nothing to compute: all {result.Cached} steps were cached[/]",
            RunStatus.Succeeded => $"[green]✔ succeeded[/]: {result.Computed} computed, {result.Cached} cached",
            RunStatus.Cancelled => $"[yellow]■ cancelled[/]: {result.Computed} computed, {result.Cached} cached; finished steps are kept — `pipelines resume {result.RunId}` goes on",
            _ => $"[red]✘ failed[/]: {result.Computed} computed, {result.Cached} cached; fix the cause and `pipelines resume {result.RunId}`",
        };
        AnsiConsole.MarkupLine($"{verdict} in {Output.Duration(result.Duration)}");
        AnsiConsole.MarkupLine($"run [bold]{result.RunId}[/] · lock file {Markup.Escape(result.LockFile)}");
        foreach (var report in Reports(result.LockFile))
        {
            AnsiConsole.MarkupLine($"report · {Markup.Escape(report)}");
        }
    }

    /// <summary>The HTML reports among a run's output links (runs/RUN/outputs/STEP/*.html), for a browser.</summary>
    private static IEnumerable<string> Reports(string lockFile)
    {
        var outputs = Path.Combine(Path.GetDirectoryName(lockFile) ?? ".", "outputs");
        if (!Directory.Exists(outputs))
        {
            return [];
        }
        return Directory.EnumerateDirectories(outputs).Order(StringComparer.Ordinal)
            .SelectMany(step => Directory.EnumerateFiles(step, "*.html").Order(StringComparer.Ordinal));
    }

    private sealed record Prepared(ExecutionPlan? Plan, string? Text, Dictionary<string, string>? Overrides, PathPolicy? Policy, int? Error);

    private static Prepared Prepare(CliServices services, string file, string[] set, string[] allowRoots)
    {
        var errors = new List<Diagnostic>();
        var overrides = ParameterResolver.ParseAssignments(set, errors);
        if (errors.Count > 0)
        {
            return new Prepared(null, null, null, null, Output.Invalid(errors));
        }
        if (!File.Exists(file))
        {
            return new Prepared(null, null, null, null, Output.Invalid($"workflow file not found: {file}"));
        }
        try
        {
            var text = File.ReadAllText(file);
            var policy = PathPolicy.Default(file, allowRoots);
            var plan = services.Compiler.CompileText(text, file, overrides, policy);
            return new Prepared(plan, text, overrides, policy, null);
        }
        catch (WorkflowInvalidException e)
        {
            return new Prepared(null, null, null, null, Output.Invalid(e.Diagnostics));
        }
        catch (IOException e)
        {
            return new Prepared(null, null, null, null, Output.Invalid($"cannot read {file}: {e.Message}"));
        }
    }

    private static (ExecutionPlan? Plan, int Error) Recompile(CliServices services, RunRecord run)
    {
        try
        {
            var policy = new PathPolicy(run.BaseDirectory, run.AllowedRoots);
            var plan = services.Compiler.CompileText(run.WorkflowText, run.WorkflowFile, run.Overrides, policy);
            return (plan, ExitCodes.Ok);
        }
        catch (WorkflowInvalidException e)
        {
            return (null, Output.Invalid(e.Diagnostics));
        }
    }

    private static RunOptions Options(RunRecord run) => RunOptions.From(run);

    private static Option<string[]> SetOption() => new("--set", "-s")
    {
        Description = "Override a workflow parameter: --set name=value (repeatable)",
        AllowMultipleArgumentsPerToken = false,
        Arity = ArgumentArity.ZeroOrMore,
    };

    private static Option<string[]> AllowRootOption() => new("--allow-root")
    {
        Description = "Also allow paths under this directory (repeatable); the working and workflow directories always are",
        Arity = ArgumentArity.ZeroOrMore,
    };

    /// <summary>--parallel N: at least 1 (0 or a negative number is refused by the parser with one line).</summary>
    private static Option<int> ParallelOption()
    {
        var option = new Option<int>("--parallel") { Description = "How many independent steps may run at once (≥ 1)", DefaultValueFactory = _ => Math.Max(1, Environment.ProcessorCount) };
        option.Validators.Add(r =>
        {
            // Read the token, not the value: a value that does not parse is the parser's own error, reported once.
            if (r.Tokens is [var token, ..] && int.TryParse(token.Value, System.Globalization.CultureInfo.InvariantCulture, out var n) && n < 1)
            {
                r.AddError("--parallel: expected an integer ≥ 1");
            }
        });
        return option;
    }
}
