using System.Diagnostics;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;

namespace Pipelines.Engine.Running;

/// <summary>
/// Executes one step of a run: the cache key from its inputs, a verified cache hit, or a claim, the activity's
/// computation and its outputs in the store; the ledger records Running, then the outcome. Used by the in-process
/// runner and by the Hangfire step job.
/// </summary>
public sealed class StepExecutor(ArtifactStore store, IRunLedger ledger, ExecutionEnvironment environment, IServiceProvider? services = null)
{
    /// <summary>A step's result as the ledger recorded it (for schedulers that run steps in other processes).</summary>
    public static StepResult FromRecord(StepRecord r) => new(r.StepId, r.Activity, r.Status, r.CacheKey,
        TimeSpan.FromMilliseconds(r.DurationMs ?? 0), r.Outputs ?? new Dictionary<string, OutputRecord>(), r.Error, r.CachedFromRunId,
        r.KeyMaterial is null ? null : KeyMaterial.FromJson(JsonNode.Parse(r.KeyMaterial)!.AsObject()));

    /// <summary>
    /// Executes one step whose upstream steps have succeeded (<paramref name="upstream"/> holds their results): cache
    /// hit, or claim its key, compute, store and record it. The ledger sees Running, then the outcome.
    /// </summary>
    public async Task<StepResult> ExecuteStepAsync(
        string runId, PlannedStep step, IReadOnlyDictionary<string, StepResult> upstream, RunOptions options, IRunObserver observer, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        var startedAt = DateTimeOffset.UtcNow;
        KeyMaterial? material = null;
        try
        {
            observer.StepStarted(step.Id);
            await ledger.UpsertStepAsync(step.Record(runId, StepStatus.Running, startedAt), CancellationToken.None);

            material = BuildMaterial(step, upstream);
            var key = material.Key;

            if (options.UseCache && TryHit(step, key, observer) is { } hit)
            {
                var cached = new StepResult(step.Id, step.Descriptor.Type, StepStatus.Cached, key, clock.Elapsed, hit.Outputs, null, hit.RunId, material);
                await Record(runId, step, cached, startedAt);
                return cached;
            }

            using var claim = await ClaimAsync(step, key, observer, ct);
            if (options.UseCache && TryHit(step, key, observer) is { } hitAfterWait)
            {
                var cached = new StepResult(step.Id, step.Descriptor.Type, StepStatus.Cached, key, clock.Elapsed, hitAfterWait.Outputs, null, hitAfterWait.RunId, material);
                await Record(runId, step, cached, startedAt);
                return cached;
            }

            var outputs = await ComputeAsync(runId, step, upstream, key, material, startedAt, clock, observer, ct);
            store.PutCacheEntry(new CacheEntry(key, step.Descriptor.Type, step.Descriptor.Version, outputs, runId, step.Id, DateTimeOffset.UtcNow, clock.Elapsed.TotalMilliseconds));
            var computed = new StepResult(step.Id, step.Descriptor.Type, StepStatus.Computed, key, clock.Elapsed, outputs, null, null, material);
            await Record(runId, step, computed, startedAt);
            return computed;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            var cancelled = new StepResult(step.Id, step.Descriptor.Type, StepStatus.Cancelled, material?.Key, clock.Elapsed, new Dictionary<string, OutputRecord>(), "cancelled", null, material);
            await Record(runId, step, cancelled, startedAt);
            return cancelled;
        }
        catch (Exception e)
        {
            var message = ErrorText.OneLine(e);
            var failed = new StepResult(step.Id, step.Descriptor.Type, StepStatus.Failed, material?.Key, clock.Elapsed, new Dictionary<string, OutputRecord>(), message, null, material);
            await Record(runId, step, failed, startedAt);
            observer.StepLog(step.Id, e is ActivityException ? $"error: {message}" : e.ToString()); // a stack trace only for what is not a known input error
            return failed;
        }
    }

    private KeyMaterial BuildMaterial(PlannedStep step, IReadOnlyDictionary<string, StepResult> upstream)
    {
        var inputs = new JsonObject();
        var artifacts = new JsonObject();
        var sources = new JsonObject();
        foreach (var (port, input) in step.Inputs.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            switch (input)
            {
                case ValueInput v:
                    inputs[port] = v.Value?.DeepClone();
                    break;
                case PathInput p:
                    try
                    {
                        sources[port] = Hashing.Any(p.FullPath);
                    }
                    catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                    {
                        // One line that names the input, never the machine's paths (a folder with a file another process holds, say).
                        throw new ActivityException($"inputs.{port}: cannot be read to fingerprint it ({(e is UnauthorizedAccessException ? "permission denied" : "a file in it is unreadable or in use")})");
                    }
                    break;
                case ArtifactInput a:
                    var digests = a.References.Select(r => (JsonNode?)upstream[r.Step].Outputs[r.Output].Digest).ToArray();
                    artifacts[port] = a.IsList ? new JsonArray(digests) : digests[0];
                    break;
            }
        }
        foreach (var name in step.Descriptor.SettingVariables)
        {
            // Settings read from the environment (a default endpoint, say) change results, so they are inputs too.
            inputs[$"$env:{name}"] = Environment.GetEnvironmentVariable(name);
        }
        return new KeyMaterial(step.Descriptor.Type, step.Descriptor.Version, inputs, artifacts, sources, environment.ToJson());
    }

    /// <summary>A cache hit whose every output object verifies; a corrupted object is reported, removed and recomputed.</summary>
    private CacheEntry? TryHit(PlannedStep step, string key, IRunObserver observer)
    {
        var entry = store.TryGetCacheEntry(key);
        if (entry is null)
        {
            return null;
        }
        foreach (var (port, output) in entry.Outputs)
        {
            if (store.Verify(output.Digest) is { } problem)
            {
                observer.Warning($"step \"{step.Id}\": cached output \"{port}\" is unusable ({problem}); removing it and recomputing the step");
                store.Delete(output.Digest);
                store.RemoveCacheEntry(key);
                return null;
            }
        }
        if (entry.Outputs.Count != step.Descriptor.Outputs.Count || step.Descriptor.Outputs.Any(o => !entry.Outputs.ContainsKey(o.Name)))
        {
            store.RemoveCacheEntry(key);
            return null;
        }
        return entry;
    }

    private async Task<IDisposable> ClaimAsync(PlannedStep step, string key, IRunObserver observer, CancellationToken ct)
    {
        var warned = false;
        while (true)
        {
            if (store.TryClaim(key) is { } claim)
            {
                return claim;
            }
            if (!warned)
            {
                observer.StepProgress(step.Id, new StepProgress(null, "waiting: another run is computing this step"));
                warned = true;
            }
            await Task.Delay(200, ct);
        }
    }

    private async Task<IReadOnlyDictionary<string, OutputRecord>> ComputeAsync(
        string runId, PlannedStep step, IReadOnlyDictionary<string, StepResult> upstream, string key, KeyMaterial material,
        DateTimeOffset startedAt, Stopwatch clock, IRunObserver observer, CancellationToken ct)
    {
        var scratch = store.CreateScratch($"{runId}-{step.Id}");
        try
        {
            var values = new Dictionary<string, JsonNode?>(StringComparer.Ordinal);
            var artifacts = new Dictionary<string, object>(StringComparer.Ordinal);
            foreach (var (port, resolved) in step.Inputs)
            {
                switch (resolved)
                {
                    case ValueInput v:
                        values[port] = v.Value;
                        break;
                    case PathInput p:
                        values[port] = p.FullPath;
                        break;
                    case ArtifactInput a:
                        var list = a.References.Select(r => ToArtifact(upstream[r.Step].Outputs[r.Output])).ToList();
                        artifacts[port] = a.IsList ? list : list[0];
                        break;
                }
            }
            var input = InputBinder.Bind(step.Activity.InputType, values, artifacts);
            var context = new Activities.ActivityContext
            {
                RunId = runId,
                StepId = step.Id,
                Descriptor = step.Descriptor,
                WorkDirectory = scratch,
                ResumeFactory = () => store.ResumeDirectoryFor(key),
                CancellationToken = ct,
                Services = services,
                OnProgress = p => observer.StepProgress(step.Id, p),
                OnLog = m => observer.StepLog(step.Id, m),
            };
            await step.Activity.ExecuteAsync(input, context);
            ct.ThrowIfCancellationRequested();

            var outputs = new Dictionary<string, OutputRecord>(StringComparer.Ordinal);
            foreach (var port in step.Descriptor.Outputs)
            {
                if (!context.WrittenOutputs.TryGetValue(port.Name, out var produced) || !(File.Exists(produced) || Directory.Exists(produced)))
                {
                    throw new ActivityException($"activity {step.Descriptor.Type} finished without writing its output \"{port.Name}\"");
                }
                var duration = clock.Elapsed.TotalMilliseconds;
                var manifest = store.Ingest(produced, (digest, size, files) => new ObjectManifest
                {
                    Digest = digest,
                    Kind = port.Kind,
                    MediaType = port.MediaType,
                    Size = size,
                    FileName = string.IsNullOrEmpty(port.FileName) ? port.Name : port.FileName,
                    IsDirectory = port.IsDirectory,
                    Files = files,
                    ProducerRunId = runId,
                    ProducerStepId = step.Id,
                    Activity = step.Descriptor.Type,
                    ActivityVersion = step.Descriptor.Version,
                    CacheKey = key,
                    Inputs = material.ToJson(),
                    CreatedAt = startedAt,
                    DurationMs = duration,
                    Environment = ExecutionEnvironment.Describe(),
                });
                outputs[port.Name] = new OutputRecord(manifest.Digest, port.Kind, port.MediaType, manifest.Size, manifest.FileName, port.IsDirectory);
            }
            store.DeleteResumeDirectory(key); // completed: its saved state is no longer needed
            return outputs;
        }
        finally
        {
            TryDelete(scratch);
        }
    }

    private Artifact ToArtifact(OutputRecord o) => new(o.Digest, o.Kind, o.MediaType, store.ObjectPath(o.Digest), o.Size, o.IsDirectory, o.FileName);

    public Task Record(string runId, PlannedStep step, StepResult r, DateTimeOffset? startedAt) =>
        ledger.UpsertStepAsync(step.Record(runId, r.Status, startedAt) with
        {
            CacheKey = r.CacheKey, KeyMaterial = r.Material is null ? null : CanonicalJson.Serialize(r.Material.ToJson()),
            EndedAt = DateTimeOffset.UtcNow, DurationMs = r.Duration.TotalMilliseconds, Error = r.Error, Outputs = r.Outputs, CachedFromRunId = r.CachedFromRunId,
        }, CancellationToken.None);

    private static void TryDelete(string dir)
    {
        try
        {
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
