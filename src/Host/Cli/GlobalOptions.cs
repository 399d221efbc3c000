using System.CommandLine;
using Spectre.Console;

namespace Pipelines.Host.Cli;

/// <summary>Options every command takes, and the shared way a command runs: services, errors, exit codes.</summary>
public sealed class GlobalOptions
{
    public Option<string?> Store { get; } = new("--store")
    {
        Description = "The artifact store directory (default: $PIPELINES_STORE or ./artifacts)",
        Recursive = true,
    };

    public Option<bool> Verbose { get; } = new("--verbose", "-v")
    {
        Description = "Show step logs and progress messages",
        Recursive = true,
    };

    /// <summary>Runs a command body with services; unexpected errors print one line (a stack trace with PIPELINES_DEBUG=1).</summary>
    public async Task<int> Execute(ParseResult parse, Func<CliServices, Task<int>> body)
    {
        try
        {
            using var services = new CliServices(parse.GetValue(Store));
            return await body(services);
        }
        catch (OperationCanceledException)
        {
            Output.Error.MarkupLine("[yellow]cancelled[/]");
            return ExitCodes.Failed;
        }
        catch (Exception e) when (Environment.GetEnvironmentVariable("PIPELINES_DEBUG") != "1")
        {
            Output.Error.MarkupLine($"[red bold]error:[/] {Markup.Escape(e.Message)}");
            return ExitCodes.Failed;
        }
    }
}
