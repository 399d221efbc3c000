using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Definitions;
using Pipelines.Engine.Ledger;
using Spectre.Console;

namespace Pipelines.Host.Cli;

/// <summary>Shared console output: diagnostics, statuses and durations.</summary>
public static class Output
{
    public static int Invalid(IReadOnlyList<Diagnostic> diagnostics)
    {
        var console = Error;
        console.MarkupLine($"[red bold]error:[/] {(diagnostics.Count == 1 ? "the workflow is invalid" : $"the workflow has {diagnostics.Count} problems")}");
        foreach (var d in diagnostics)
        {
            console.MarkupLine($"  [red]✘[/] [bold]{Markup.Escape(d.File)}[/]: [yellow]{Markup.Escape(d.JsonPath)}[/]: {Markup.Escape(d.Message)}");
        }
        return ExitCodes.Invalid;
    }

    public static int Invalid(string message)
    {
        Error.MarkupLine($"[red bold]error:[/] {Markup.Escape(message)}");
        return ExitCodes.Invalid;
    }

    public static IAnsiConsole Error { get; } = CreateError();

    private static IAnsiConsole CreateError()
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        if (Console.IsErrorRedirected)
        {
            console.Profile.Width = Math.Max(console.Profile.Width, 160);
        }
        return console;
    }

    public static string Status(StepStatus status) => status switch
    {
        StepStatus.Computed => "[green]computed[/]",
        StepStatus.Cached => "[blue]cached[/]",
        StepStatus.Failed => "[red]failed[/]",
        StepStatus.Skipped => "[grey]skipped[/]",
        StepStatus.Cancelled => "[yellow]cancelled[/]",
        StepStatus.Running => "[yellow]running[/]",
        StepStatus.Queued => "[grey]queued[/]",
        _ => "[grey]pending[/]",
    };

    public static string Status(RunStatus status) => status switch
    {
        RunStatus.Succeeded => "[green]succeeded[/]",
        RunStatus.Failed => "[red]failed[/]",
        RunStatus.Cancelled => "[yellow]cancelled[/]",
        _ => "[yellow]running[/]",
    };

    public static string Duration(TimeSpan t) => t.TotalSeconds switch
    {
        < 1 => $"{t.TotalMilliseconds:0} ms",
        < 120 => $"{t.TotalSeconds:0.00} s",
        _ => $"{(int)t.TotalMinutes} min {t.Seconds} s",
    };

    public static string Digests(IReadOnlyDictionary<string, OutputRecord>? outputs) =>
        outputs is null || outputs.Count == 0
            ? ""
            : string.Join("\n", outputs.Select(o => $"{o.Key} {Hashing.Short(o.Value.Digest)}"));
}
