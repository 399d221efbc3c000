using System.CommandLine;
using System.Runtime.InteropServices;
using Pipelines.Host.Cli;
using Spectre.Console;

namespace Pipelines.Host;

/// <summary>The <c>pipelines</c> command line.</summary>
public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        if (Console.IsOutputRedirected)
        {
            // Logs and CI: no terminal width to honour, so keep tables and digests on one line.
            AnsiConsole.Profile.Width = Math.Max(AnsiConsole.Profile.Width, 160);
        }
        var root = BuildRoot();
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var error in parse.Errors)
            {
                Output.Error.MarkupLine($"[red bold]error:[/] {Spectre.Console.Markup.Escape(error.Message)}");
            }
            Output.Error.MarkupLine("run [bold]pipelines --help[/] for usage");
            return ExitCodes.Invalid;
        }

        using var cts = new CancellationTokenSource();
        void Cancel(PosixSignalContext context)
        {
            context.Cancel = true;
            if (!cts.IsCancellationRequested)
            {
                Output.Error.MarkupLine("[yellow]cancelling: finishing bookkeeping; finished steps are kept (press Ctrl+C again to force)[/]");
                cts.Cancel();
            }
            else
            {
                context.Cancel = false;
            }
        }
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, Cancel);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, Cancel);
        return await parse.InvokeAsync(new InvocationConfiguration { ProcessTerminationTimeout = null }, cts.Token);
    }

    public static RootCommand BuildRoot()
    {
        var g = new GlobalOptions();
        var root = new RootCommand("pipelines: declarative, cached, reproducible interpretability experiments")
        {
            RunCommands.Run(g),
            RunCommands.Validate(g),
            RunCommands.Resume(g),
            RunCommands.Reproduce(g),
            InspectCommands.Activities(g),
            InspectCommands.Schema(g),
            InspectCommands.Runs(g),
            InspectCommands.Why(g),
            ArtifactCommands.Artifacts(g),
            ModelCommands.Model(g),
            DiffusionCommands.Diffusion(g),
            ServerCommands.Serve(g),
            ServerCommands.Worker(g),
            ServerCommands.Health(g),
        };
        root.Options.Add(g.Store);
        root.Options.Add(g.Verbose);
        return root;
    }
}
