using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;

namespace Pipelines.Engine.Running;

/// <summary>Publishes a finished run, whoever ran its steps: run.lock.json and the read-only output links.</summary>
public sealed class RunPublisher(ArtifactStore store, ExecutionEnvironment environment)
{
    /// <summary>Writes run.lock.json and the run's output links (a finished run, whoever ran its steps).</summary>
    public RunResult Publish(string runId, ExecutionPlan plan, RunOptions options, IReadOnlyList<StepResult> ordered, RunStatus status, DateTimeOffset started, DateTimeOffset ended, TimeSpan duration)
    {
        var lockFile = WriteLockFile(runId, plan, options, ordered, status, started, ended);
        Materialize(runId, ordered);
        return new RunResult(runId, status, ordered, duration, lockFile);
    }

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
}
