using System.Collections.Concurrent;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Planning;
using Pipelines.Engine.Running;
using Spectre.Console;

namespace Pipelines.Host.Cli;

/// <summary>
/// Shows a run as it goes: a live Spectre progress display (one bar per step) on a terminal, or one line per
/// event when output is redirected (CI, logs, tests).
/// </summary>
public sealed class ConsoleObserver : IRunObserver
{
    private readonly ConcurrentDictionary<string, ProgressTask> _tasks = new();
    private readonly ConcurrentDictionary<string, long> _lastLine = new();

    /// <summary>Redirected output: at most one progress line per step this often, so logs show long steps are alive.</summary>
    public static readonly TimeSpan RedirectedProgressEvery = TimeSpan.FromSeconds(10);
    private readonly bool _verbose;
    private ProgressContext? _progress;

    public ConsoleObserver(bool verbose) => _verbose = verbose;

    public static bool Interactive => AnsiConsole.Profile.Capabilities.Interactive && !Console.IsOutputRedirected;

    /// <summary>Runs <paramref name="work"/> under a live display when the console is interactive.</summary>
    public async Task<T> ShowAsync<T>(Func<Task<T>> work)
    {
        if (!Interactive)
        {
            return await work();
        }
        return await AnsiConsole.Progress()
            .AutoClear(false)
            .HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new SpinnerColumn())
            .StartAsync(async ctx =>
            {
                _progress = ctx;
                return await work();
            });
    }

    public void RunStarted(string runId, ExecutionPlan plan)
    {
        if (_progress is null)
        {
            AnsiConsole.MarkupLine($"[bold]run {runId}[/]: {Markup.Escape(plan.Definition.Name)} ({plan.Steps.Count} steps)");
            return;
        }
        foreach (var step in plan.Steps)
        {
            var task = _progress.AddTask(Label(step.Id, "[grey]pending[/]"), autoStart: false, maxValue: 1);
            _tasks[step.Id] = task;
        }
    }

    public void StepStarted(string stepId)
    {
        if (_tasks.TryGetValue(stepId, out var task))
        {
            task.Description = Label(stepId, "[yellow]running[/]");
            task.StartTask();
            task.IsIndeterminate = true;
        }
        else if (_verbose)
        {
            AnsiConsole.MarkupLine($"  [yellow]▶[/] {Markup.Escape(stepId)} started");
        }
    }

    public void StepProgress(string stepId, StepProgress progress)
    {
        if (_tasks.TryGetValue(stepId, out var task))
        {
            if (progress.Fraction is { } f)
            {
                task.IsIndeterminate = false;
                task.Value = Math.Clamp(f, 0, 1);
            }
            if (progress.Message is { } m)
            {
                task.Description = Label(stepId, $"[yellow]running[/] [grey]{Markup.Escape(m)}[/]");
            }
        }
        else if (progress.Message is { } message && (_verbose || Due(stepId)))
        {
            var percent = progress.Fraction is { } f2 ? $"{Math.Clamp(f2, 0, 1):P0} " : "";
            AnsiConsole.MarkupLine($"    [grey]{Markup.Escape(stepId)}: {percent}{Markup.Escape(message)}[/]");
        }
    }

    private bool Due(string stepId)
    {
        var now = Environment.TickCount64;
        var last = _lastLine.GetOrAdd(stepId, now);
        if (last == now)
        {
            return false; // the first report only starts the clock
        }
        if (now - last < RedirectedProgressEvery.TotalMilliseconds)
        {
            return false;
        }
        _lastLine[stepId] = now;
        return true;
    }

    public void StepLog(string stepId, string message)
    {
        if (_verbose)
        {
            AnsiConsole.MarkupLine($"    [grey]{Markup.Escape(stepId)} | {Markup.Escape(message)}[/]");
        }
    }

    public void StepFinished(StepResult result)
    {
        if (_tasks.TryGetValue(result.StepId, out var task))
        {
            task.IsIndeterminate = false;
            task.Value = 1;
            task.Description = Label(result.StepId, Output.Status(result.Status));
            task.StopTask();
            return;
        }
        var detail = result.Status switch
        {
            Engine.Ledger.StepStatus.Cached => $" (from run {result.CachedFromRunId})",
            Engine.Ledger.StepStatus.Failed or Engine.Ledger.StepStatus.Skipped => $": {result.Error}",
            _ => "",
        };
        AnsiConsole.MarkupLine($"  {Output.Status(result.Status)} {Markup.Escape(result.StepId)} in {Output.Duration(result.Duration)}{Markup.Escape(detail)}");
    }

    public void Warning(string message) => Output.Error.MarkupLine($"[yellow]warning:[/] {Markup.Escape(message)}");

    private static string Label(string stepId, string status) => $"{Markup.Escape(stepId),-16} {status}";
}
