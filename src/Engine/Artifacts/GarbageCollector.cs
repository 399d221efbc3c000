using Pipelines.Engine.Ledger;

namespace Pipelines.Engine.Artifacts;

/// <summary>What a garbage collection removed (or would remove, on a dry run).</summary>
public sealed record GcReport(int KeptRuns, int ObjectsKept, int ObjectsRemoved, long BytesFreed, int CacheEntriesRemoved, int RunDirectoriesRemoved, int ScratchRemoved);

/// <summary>
/// Keeps every object that the newest N runs reference (their outputs, through cache hits too) and removes the rest,
/// with the cache entries that pointed at removed objects and the result links of runs no longer kept.
/// </summary>
public static class GarbageCollector
{
    public static async Task<GcReport> CollectAsync(ArtifactStore store, IRunLedger ledger, int keepRuns, bool dryRun, CancellationToken ct = default)
    {
        var runs = await ledger.ListRunsAsync(int.MaxValue, ct);
        var kept = runs.Take(keepRuns).ToList();
        var live = new HashSet<string>(StringComparer.Ordinal);
        foreach (var run in kept)
        {
            foreach (var step in await ledger.GetStepsAsync(run.Id, ct))
            {
                foreach (var output in step.Outputs?.Values ?? [])
                {
                    live.Add(output.Digest);
                }
            }
        }
        var running = runs.Where(r => r.Status == RunStatus.Running).Select(r => r.Id).ToHashSet();

        int removed = 0, keptObjects = 0;
        long bytes = 0;
        foreach (var digest in store.ObjectDigests().ToList())
        {
            if (live.Contains(digest))
            {
                keptObjects++;
                continue;
            }
            var manifest = store.ReadManifest(digest);
            if (manifest is not null && running.Contains(manifest.ProducerRunId))
            {
                keptObjects++;
                continue; // produced by a run still going (or killed, awaiting resume)
            }
            removed++;
            bytes += manifest?.Size ?? SizeOf(store.ObjectPath(digest));
            if (!dryRun)
            {
                store.Delete(digest);
            }
        }

        var cacheRemoved = 0;
        foreach (var entry in store.CacheEntries().ToList())
        {
            if (entry.Outputs.Values.Any(o => !live.Contains(o.Digest) && !running.Contains(entry.RunId)))
            {
                cacheRemoved++;
                if (!dryRun)
                {
                    store.RemoveCacheEntry(entry.Key);
                }
            }
        }

        var keptIds = kept.Select(r => r.Id).Concat(running).ToHashSet();
        var runDirs = 0;
        foreach (var dir in Directory.EnumerateDirectories(store.RunsDirectory).ToList())
        {
            var outputs = Path.Combine(dir, "outputs");
            if (!keptIds.Contains(Path.GetFileName(dir)) && Directory.Exists(outputs))
            {
                runDirs++;
                if (!dryRun)
                {
                    Directory.Delete(outputs, recursive: true); // hard links would keep removed objects' bytes alive
                }
            }
        }

        var scratch = 0;
        foreach (var dir in Directory.EnumerateDirectories(store.TempDirectory).ToList())
        {
            if (Directory.GetLastWriteTimeUtc(dir) < DateTime.UtcNow.AddHours(-1))
            {
                scratch++;
                if (!dryRun)
                {
                    Directory.Delete(dir, recursive: true);
                }
            }
        }
        // Resume saves of steps that never completed: kept a week for a later resume, then removed.
        if (Directory.Exists(store.ResumeDirectory))
        {
            foreach (var dir in Directory.EnumerateDirectories(store.ResumeDirectory).ToList())
            {
                if (Directory.GetLastWriteTimeUtc(dir) < DateTime.UtcNow.AddDays(-7))
                {
                    scratch++;
                    if (!dryRun)
                    {
                        Directory.Delete(dir, recursive: true);
                    }
                }
            }
        }
        return new GcReport(kept.Count, keptObjects, removed, bytes, cacheRemoved, runDirs, scratch);
    }

    private static long SizeOf(string path) => Directory.Exists(path)
        ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length)
        : File.Exists(path) ? new FileInfo(path).Length : 0;
}
