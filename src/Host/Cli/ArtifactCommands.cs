using System.CommandLine;
using Pipelines.Engine.Artifacts;
using Spectre.Console;

namespace Pipelines.Host.Cli;

/// <summary><c>artifacts gc</c>.</summary>
public static class ArtifactCommands
{
    public static Command Artifacts(GlobalOptions g)
    {
        var keep = new Option<int>("--keep-runs") { Description = "Keep what the newest N runs reference", DefaultValueFactory = _ => 20 };
        var dryRun = new Option<bool>("--dry-run") { Description = "Only say what would be removed" };
        var gc = new Command("gc", "Remove objects that no recent run references") { keep, dryRun };
        gc.SetAction((p, ct) => g.Execute(p, async services =>
        {
            var keepRuns = p.GetValue(keep);
            if (keepRuns < 0)
            {
                return Output.Invalid("--keep-runs must be 0 or more");
            }
            var report = await GarbageCollector.CollectAsync(services.Store, services.Ledger, keepRuns, p.GetValue(dryRun), ct);
            var verb = p.GetValue(dryRun) ? "would remove" : "removed";
            AnsiConsole.MarkupLine($"kept {report.ObjectsKept} objects referenced by the newest {report.KeptRuns} runs; " +
                $"{verb} {report.ObjectsRemoved} objects ({report.BytesFreed / 1024.0 / 1024.0:0.##} MiB), {report.CacheEntriesRemoved} cache entries, " +
                $"{report.RunDirectoriesRemoved} old runs' result links and {report.ScratchRemoved} stale scratch directories");
            return ExitCodes.Ok;
        }));
        return new Command("artifacts", "Manage the artifact store") { gc };
    }
}
