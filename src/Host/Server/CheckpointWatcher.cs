using Hangfire;
using Hangfire.Storage;
using Pipelines.Activities.Model;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Definitions;
using Pipelines.Engine.Ledger;
using Pipelines.Host.Server.Api;

namespace Pipelines.Host.Server;

/// <summary>What one check of a trigger did.</summary>
public sealed record CheckResult(IReadOnlyList<string> Started, IReadOnlyList<string> NotReady, int Known);

/// <summary>
/// Scheduled re-runs on new checkpoints. Each trigger of each saved workflow is a recurring Hangfire job
/// (<c>watch:{workflow}:{trigger}</c>, deterministic ids, re-registered when workflows change). A check lists the
/// watched directory, keeps the entries that are ready (a checkpoint's config and weights complete, nothing
/// modified for <c>stableSeconds</c>), digests them, and starts one run per digest the ledger has not seen, with
/// the checkpoint's path bound to the trigger's parameter. The ledger's unique key makes that exactly once, even
/// with several servers checking at the same time.
/// </summary>
public sealed class CheckpointWatcher(RunScheduler scheduler, ServerConfig config)
{
    private const string Prefix = "watch:";

    /// <summary>Brings the recurring jobs in line with the saved workflows' triggers.</summary>
    /// <remarks>A file that cannot be read or scheduled is reported through <paramref name="report"/> and skipped: one bad
    /// file never stops the server.</remarks>
    public static void Sync(IRecurringJobManager jobs, JobStorage storage, ServerConfig config, Action<string>? report = null)
    {
        var wanted = new HashSet<string>(StringComparer.Ordinal);
        if (Directory.Exists(config.WorkflowsDirectory))
        {
            foreach (var file in Directory.EnumerateFiles(config.WorkflowsDirectory, "*.json").Where(f => !f.EndsWith(".schema.json", StringComparison.Ordinal)))
            {
                var name = Path.GetFileNameWithoutExtension(file);
                WorkflowDefinition definition;
                try
                {
                    definition = WorkflowParser.Parse(WorkflowParser.ReadText(file), name + ".json");
                }
                catch (WorkflowInvalidException e)
                {
                    if (e.Diagnostics.Any(d => d.JsonPath.StartsWith("$.triggers", StringComparison.Ordinal) || d.JsonPath == "$"))
                    {
                        report?.Invoke($"warning: workflows/{name}.json: its triggers are not scheduled: {e.Diagnostics[0].JsonPath}: {e.Diagnostics[0].Message}");
                    }
                    continue;
                }
                foreach (var trigger in definition.Triggers)
                {
                    var id = $"{Prefix}{name}:{trigger.Id}";
                    var (workflow, triggerId) = (name, trigger.Id);
                    try
                    {
                        jobs.AddOrUpdate<CheckpointWatcher>(id, "default", w => w.CheckAsync(workflow, triggerId, CancellationToken.None), trigger.Schedule);
                        wanted.Add(id);
                    }
                    catch (Exception e) when (e is ArgumentException or FormatException or InvalidOperationException)
                    {
                        report?.Invoke($"warning: workflows/{name}.json: trigger \"{trigger.Id}\" is not scheduled: {e.Message.Split('\n')[0]}");
                    }
                }
            }
        }
        using var connection = storage.GetConnection();
        foreach (var job in connection.GetRecurringJobs().Where(j => j.Id.StartsWith(Prefix, StringComparison.Ordinal) && !wanted.Contains(j.Id)))
        {
            jobs.RemoveIfExists(job.Id);
        }
    }

    public async Task<CheckResult> CheckAsync(string workflow, string triggerId, CancellationToken cancellationToken)
    {
        var file = WorkflowsApi.FileFor(config, workflow);
        if (file is null || !File.Exists(file))
        {
            return new CheckResult([], [], 0);
        }
        var text = await File.ReadAllTextAsync(file, cancellationToken);
        var errors = new List<Diagnostic>();
        var definition = WorkflowParser.ParseLenient(text, file, errors);
        var trigger = errors.Count == 0 ? definition?.Triggers.FirstOrDefault(t => t.Id == triggerId) : null;
        if (trigger is null)
        {
            return new CheckResult([], [], 0);
        }
        if (scheduler.Paths.Resolve(trigger.Watch, out _) is not { } directory || !Directory.Exists(directory))
        {
            return new CheckResult([], [], 0);
        }
        var started = new List<string>();
        var notReady = new List<string>();
        var known = 0;
        foreach (var entry in Directory.EnumerateFileSystemEntries(directory, trigger.Pattern).Order(StringComparer.Ordinal))
        {
            if (!Ready(entry, trigger.StableSeconds))
            {
                notReady.Add(Path.GetFileName(entry));
                continue;
            }
            var digest = Hashing.Any(entry);
            if (!await scheduler.Ledger.ClaimCheckpointAsync(workflow, trigger.Id, digest, entry, cancellationToken))
            {
                known++;
                continue;
            }
            var runId = await scheduler.SubmitAsync(new Submission(text, file, new Dictionary<string, string> { [trigger.Parameter] = entry }), ct: cancellationToken);
            await scheduler.Ledger.SetCheckpointRunAsync(workflow, trigger.Id, digest, runId, cancellationToken);
            started.Add(runId);
        }
        return new CheckResult(started, notReady, known);
    }

    /// <summary>Complete (a checkpoint directory's files all there) and unchanged for <paramref name="stableSeconds"/>.</summary>
    public static bool Ready(string entry, int stableSeconds)
    {
        var files = Directory.Exists(entry) ? Directory.GetFiles(entry, "*", SearchOption.AllDirectories) : [entry];
        if (files.Length == 0)
        {
            return false;
        }
        var newest = files.Max(f => File.GetLastWriteTimeUtc(f));
        if (DateTime.UtcNow - newest < TimeSpan.FromSeconds(stableSeconds))
        {
            return false;
        }
        return !Directory.Exists(entry) || ModelArtifacts.IsComplete(entry);
    }
}
