using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;

namespace Pipelines.Engine.Running;

/// <summary>
/// Runs a plan in this process: steps in dependency order, independent ones in parallel (bounded), each one a cache
/// hit or a computation whose outputs enter the store. A failed step skips its descendants; other branches go on.
/// </summary>
public sealed class InProcessRunner(ArtifactStore store, IRunLedger ledger, ExecutionEnvironment environment, IServiceProvider? services = null)
{
    public ArtifactStore Store => store;

    public async Task<RunResult> RunAsync(ExecutionPlan plan, RunOptions options, IRunObserver? observer = null, CancellationToken ct = default)
    {
        observer ??= NullRunObserver.Instance;
        var runId = options.RunId ?? RunIds.New();
        var clock = Stopwatch.StartNew();
        var started = DateTimeOffset.UtcNow;
        await ledger.CreateRunAsync(new RunRecord(runId, plan.Definition.Name, options.WorkflowFile, options.WorkflowText,
            options.Overrides, options.BaseDirectory, options.AllowedRoots, options.Kind, options.OriginRunId,
            RunStatus.Running, started, null, null), CancellationToken.None);
        await ledger.UpsertStepsAsync(plan.Steps.Select(step => new StepRecord(runId, step.Id, step.Descriptor.Type, step.Descriptor.Version,
            StepStatus.Pending, null, null, null, null, null, null, null)).ToList(), CancellationToken.None);
        observer.RunStarted(runId, plan);

        var results = new Dictionary<string, StepResult>(StringComparer.Ordinal);
        var pending = plan.Steps.ToList();
        var running = new Dictionary<string, Task<StepResult>>(StringComparer.Ordinal);
        while (pending.Count > 0 || running.Count > 0)
        {
            foreach (var step in pending.ToList())
            {
                var blocked = step.DependsOn.FirstOrDefault(d => results.TryGetValue(d, out var r) && !r.Succeeded);
                if (blocked is not null || ct.IsCancellationRequested)
                {
                    var status = ct.IsCancellationRequested ? StepStatus.Cancelled : StepStatus.Skipped;
                    var error = status == StepStatus.Skipped ? $"skipped: step \"{blocked}\" did not succeed" : "cancelled before it started";
                    var skipped = new StepResult(step.Id, step.Descriptor.Type, status, null, TimeSpan.Zero, new Dictionary<string, OutputRecord>(), error);
                    results[step.Id] = skipped;
                    pending.Remove(step);
                    await Record(runId, step, skipped, null);
                    observer.StepFinished(skipped);
                    continue;
                }
                if (running.Count < options.MaxParallel && step.DependsOn.All(d => results.ContainsKey(d)))
                {
                    pending.Remove(step);
                    Dictionary<string, StepResult> upstream;
                    lock (results)
                    {
                        upstream = new Dictionary<string, StepResult>(results, StringComparer.Ordinal);
                    }
                    running[step.Id] = Task.Run(() => ExecuteStepAsync(runId, step, upstream, options, observer, ct), CancellationToken.None);
                }
            }
            if (running.Count == 0)
            {
                continue;
            }
            var finished = await Task.WhenAny(running.Values);
            var result = await finished;
            running.Remove(result.StepId);
            lock (results)
            {
                results[result.StepId] = result;
            }
            observer.StepFinished(result);
        }

        var ordered = plan.Steps.Select(s => results[s.Id]).ToList();
        var runStatus = Outcome(ordered, ct.IsCancellationRequested);
        var ended = DateTimeOffset.UtcNow;
        await ledger.UpdateRunAsync(runId, runStatus, ended, Error(ordered), CancellationToken.None);
        var runResult = Publish(runId, plan, options, ordered, runStatus, started, ended, clock.Elapsed);
        observer.RunFinished(runResult);
        return runResult;
    }

    /// <summary>A run's status from its steps' results.</summary>
    public static RunStatus Outcome(IReadOnlyList<StepResult> ordered, bool cancelled) =>
        ordered.All(r => r.Succeeded) ? RunStatus.Succeeded : cancelled || ordered.Any(r => r.Status == StepStatus.Cancelled) ? RunStatus.Cancelled : RunStatus.Failed;

    /// <summary>The run's error line: the first failed step.</summary>
    public static string? Error(IReadOnlyList<StepResult> ordered) =>
        ordered.FirstOrDefault(r => r.Status == StepStatus.Failed) is { } failed ? $"step \"{failed.StepId}\" failed: {failed.Error}" : null;

    /// <summary>Writes run.lock.json and the run's output links (a finished run, whoever ran its steps).</summary>
    public RunResult Publish(string runId, ExecutionPlan plan, RunOptions options, IReadOnlyList<StepResult> ordered, RunStatus status, DateTimeOffset started, DateTimeOffset ended, TimeSpan duration)
    {
        var lockFile = WriteLockFile(runId, plan, options, ordered, status, started, ended);
        Materialize(runId, ordered);
        return new RunResult(runId, status, ordered, duration, lockFile);
    }

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
            await ledger.UpsertStepAsync(new StepRecord(runId, step.Id, step.Descriptor.Type, step.Descriptor.Version,
                StepStatus.Running, null, null, startedAt, null, null, null, null), CancellationToken.None);

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
            observer.StepLog(step.Id, e.ToString());
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
                    sources[port] = Hashing.Any(p.FullPath);
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
            return outputs;
        }
        finally
        {
            TryDelete(scratch);
        }
    }

    private Artifact ToArtifact(OutputRecord o) => new(o.Digest, o.Kind, o.MediaType, store.ObjectPath(o.Digest), o.Size, o.IsDirectory, o.FileName);

    private Task Record(string runId, PlannedStep step, StepResult r, DateTimeOffset? startedAt) =>
        ledger.UpsertStepAsync(new StepRecord(runId, step.Id, step.Descriptor.Type, step.Descriptor.Version, r.Status, r.CacheKey,
            r.Material is null ? null : CanonicalJson.Serialize(r.Material.ToJson()), startedAt, DateTimeOffset.UtcNow,
            r.Duration.TotalMilliseconds, r.Error, r.Outputs, r.CachedFromRunId), CancellationToken.None);

    private string WriteLockFile(string runId, ExecutionPlan plan, RunOptions options, IReadOnlyList<StepResult> results, RunStatus status, DateTimeOffset started, DateTimeOffset ended)
    {
        var dir = Path.Combine(store.RunsDirectory, runId);
        Directory.CreateDirectory(dir);
        var steps = new JsonObject();
        foreach (var r in results)
        {
            var outputs = new JsonObject();
            foreach (var (port, o) in r.Outputs)
            {
                outputs[port] = new JsonObject { ["digest"] = o.Digest, ["kind"] = o.Kind, ["mediaType"] = o.MediaType, ["size"] = o.Size };
            }
            steps[r.StepId] = new JsonObject
            {
                ["activity"] = r.Activity,
                ["status"] = r.Status.ToString().ToLowerInvariant(),
                ["cacheKey"] = r.CacheKey,
                ["cachedFrom"] = r.CachedFromRunId,
                ["durationMs"] = Math.Round(r.Duration.TotalMilliseconds, 1),
                ["key"] = r.Material?.ToJson(),
                ["outputs"] = outputs,
                ["error"] = r.Error,
            };
        }
        var parameters = new JsonObject();
        foreach (var (k, v) in plan.Parameters)
        {
            parameters[k] = v.DeepClone();
        }
        JsonNode? definition;
        try
        {
            definition = JsonNode.Parse(options.WorkflowText, documentOptions: new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException)
        {
            definition = options.WorkflowText;
        }
        var doc = new JsonObject
        {
            ["lockVersion"] = 1,
            ["runId"] = runId,
            ["kind"] = options.Kind.ToString().ToLowerInvariant(),
            ["originRunId"] = options.OriginRunId,
            ["status"] = status.ToString().ToLowerInvariant(),
            ["startedAt"] = started,
            ["endedAt"] = ended,
            ["workflow"] = new JsonObject
            {
                ["name"] = plan.Definition.Name,
                ["file"] = options.WorkflowFile,
                ["sha256"] = CanonicalJson.Sha256(options.WorkflowText),
                ["definition"] = definition,
            },
            ["parameters"] = parameters,
            ["overrides"] = JsonSerializer.SerializeToNode(options.Overrides),
            ["environment"] = environment.ToJson(),
            ["host"] = ExecutionEnvironment.Describe(),
            ["steps"] = steps,
        };
        var path = Path.Combine(dir, "run.lock.json");
        ArtifactStore.WriteAtomic(path, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return path;
    }

    /// <summary>Links each output beside the run's lock file (<c>runs/RUN/outputs/STEP/FILE</c>) so people find results.</summary>
    private void Materialize(string runId, IReadOnlyList<StepResult> results)
    {
        foreach (var r in results.Where(r => r.Succeeded))
        {
            foreach (var (port, o) in r.Outputs)
            {
                var dir = Path.Combine(store.RunsDirectory, runId, "outputs", r.StepId);
                Directory.CreateDirectory(dir);
                var clash = r.Outputs.Count(x => x.Value.FileName == o.FileName) > 1;
                var name = clash ? $"{port}-{o.FileName}" : o.FileName;
                var target = Path.Combine(dir, name);
                try
                {
                    if (File.Exists(target) || Directory.Exists(target) || new FileInfo(target).LinkTarget is not null)
                    {
                        File.Delete(target);
                    }
                    if (o.IsDirectory || !FileLinks.TryHardLink(store.ObjectPath(o.Digest), target))
                    {
                        File.CreateSymbolicLink(target, store.ObjectPath(o.Digest));
                    }
                }
                catch (IOException)
                {
                    // Results stay reachable through the store; a link that cannot be made is not worth failing a run.
                }
            }
        }
    }

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
