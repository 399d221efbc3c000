using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Pipelines.Engine.Definitions;
using Pipelines.Engine.Ledger;

namespace Pipelines.Host.Server.Api;

/// <summary>A run request: a saved workflow's name, or a definition inline, with parameter values.</summary>
public sealed record RunRequest(string? Workflow, JsonObject? Definition, Dictionary<string, JsonNode?>? Parameters);

/// <summary>Runs: submit, list, status per step, cancel, resume, and the live event stream.</summary>
public static class RunsApi
{
    private static readonly JsonSerializerOptions Web = new(JsonSerializerDefaults.Web);

    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/api/runs").WithTags("Runs");
        group.MapPost("/", async (RunRequest request, ServerConfig config, RunScheduler scheduler, CancellationToken ct) =>
        {
            string text, file;
            if (request.Workflow is { } name)
            {
                if (WorkflowsApi.FileFor(config, name) is not { } path || !File.Exists(path))
                {
                    return Results.NotFound(new { error = $"no workflow \"{name}\"" });
                }
                (text, file) = (await File.ReadAllTextAsync(path, ct), path);
            }
            else if (request.Definition is { } definition)
            {
                (text, file) = (definition.ToJsonString(), Path.Combine(config.ProjectRoot, "request.json"));
            }
            else
            {
                return Results.BadRequest(new { error = "name a saved \"workflow\" or give a \"definition\"" });
            }
            var overrides = (request.Parameters ?? []).ToDictionary(p => p.Key,
                p => p.Value is JsonValue v && v.TryGetValue<string>(out var s) ? s : p.Value?.ToJsonString() ?? "null");
            try
            {
                var runId = await scheduler.SubmitAsync(new Submission(text, file, overrides), ct: ct);
                return Results.Accepted($"/api/runs/{runId}", new { runId });
            }
            catch (WorkflowInvalidException e)
            {
                return Results.BadRequest(new { error = "the workflow is invalid", diagnostics = e.Diagnostics });
            }
        }).WithSummary("Submit a run; its steps become jobs on their resource's queue")
          .Responds(StatusCodes.Status202Accepted, StatusCodes.Status400BadRequest, StatusCodes.Status404NotFound);

        group.MapGet("/", async (IRunLedger ledger, int? limit, CancellationToken ct) =>
            (await ledger.ListRunsAsync(Math.Clamp(limit ?? 50, 1, 1000), ct)).Select(Summary))
            .WithSummary("Recent runs, newest first").Responds(StatusCodes.Status200OK);

        group.MapGet("/{id}", async (string id, IRunLedger ledger, CancellationToken ct) =>
        {
            var run = await ledger.GetRunAsync(id, ct);
            if (run is null)
            {
                return Results.NotFound(new { error = $"no run \"{id}\"" });
            }
            var steps = await ledger.GetStepsAsync(id, ct);
            var reproduction = run is { Kind: RunKind.Reproduce, OriginRunId: { } origin } && run.Status != RunStatus.Running
                ? Reproduction.Compare(await ledger.GetStepsAsync(origin, ct), steps)
                    .Select(r => new { step = r.StepId, output = r.Output, original = r.Original, reproduced = r.Reproduced, status = r.ReproducedStatus, match = r.Match })
                    .ToList()
                : null;
            return Results.Ok(new
            {
                run = Summary(run),
                parameters = run.Overrides,
                workflowText = run.WorkflowText,
                steps = steps.Select(Step),
                reproduction,
            });
        }).WithSummary("A run and the status of each step: queued, running, computed, cached, failed, skipped, cancelled; a finished reproduction compares every output digest with the original's")
          .Responds(StatusCodes.Status200OK, StatusCodes.Status404NotFound);

        group.MapPost("/{id}/cancel", async (string id, RunScheduler scheduler, CancellationToken ct) =>
            await scheduler.CancelAsync(id, ct) ? Results.Accepted($"/api/runs/{id}", new { runId = id, status = "cancelled" })
                : Results.Conflict(new { error = $"run \"{id}\" is not running" }))
            .WithSummary("Cancel a running run").Responds(StatusCodes.Status202Accepted, StatusCodes.Status409Conflict);

        // Not tied to the request: a client that goes away (a reload) while the resume waits for cancelled steps to
        // stop must not leave the run half-resumed.
        group.MapPost("/{id}/resume", async (string id, RunScheduler scheduler) =>
            await scheduler.ResumeAsync(id, CancellationToken.None) ? Results.Accepted($"/api/runs/{id}", new { runId = id, status = "running" })
                : Results.Conflict(new { error = $"run \"{id}\" is not failed or cancelled" }))
            .WithSummary("Resume a failed or cancelled run: finished steps are kept").Responds(StatusCodes.Status202Accepted, StatusCodes.Status409Conflict);

        group.MapPost("/{id}/rerun", async (string id, IRunLedger ledger, RunScheduler scheduler, CancellationToken ct) =>
            await ledger.GetRunAsync(id, ct) is { } run
                ? Results.Accepted(null as string, new { runId = await scheduler.SubmitAsync(new Submission(run.WorkflowText, run.WorkflowFile, run.Overrides), ct: ct) })
                : Results.NotFound(new { error = $"no run \"{id}\"" }))
            .WithSummary("Run a past run's workflow and parameters again (cached steps are reused)").Responds(StatusCodes.Status202Accepted, StatusCodes.Status404NotFound);

        group.MapPost("/{id}/reproduce", async (string id, IRunLedger ledger, RunScheduler scheduler, CancellationToken ct) =>
            await ledger.GetRunAsync(id, ct) is { } run
                ? Results.Accepted(null as string, new { runId = await scheduler.SubmitAsync(new Submission(run.WorkflowText, run.WorkflowFile, run.Overrides), RunKind.Reproduce, id, ct) })
                : Results.NotFound(new { error = $"no run \"{id}\"" }))
            .WithSummary("Recompute a past run without the cache; GET the new run when it ends for the comparison of every digest with the original's")
            .Responds(StatusCodes.Status202Accepted, StatusCodes.Status404NotFound);

        group.MapGet("/{id}/events", Events).WithSummary("Server-sent events: every step's status on connecting (so a client can reattach), then status changes, progress and logs, then the run's end")
            .Produces(StatusCodes.Status200OK, contentType: "text/event-stream").Responds(StatusCodes.Status404NotFound);
    }

    private static object Summary(RunRecord r) => new
    {
        id = r.Id, workflow = r.WorkflowName, kind = r.Kind.ToString().ToLowerInvariant(), status = r.Status.ToString().ToLowerInvariant(),
        startedAt = r.StartedAt, endedAt = r.EndedAt, error = r.Error, origin = r.OriginRunId,
        parameters = r.Overrides,
    };

    private static object Step(StepRecord s) => new
    {
        id = s.StepId, activity = s.Activity, status = s.Status.ToString().ToLowerInvariant(), cacheKey = s.CacheKey,
        cachedFrom = s.CachedFromRunId, startedAt = s.StartedAt, endedAt = s.EndedAt, durationMs = s.DurationMs, error = s.Error,
        outputs = s.Outputs?.ToDictionary(o => o.Key, o => new { digest = o.Value.Digest, kind = o.Value.Kind, mediaType = o.Value.MediaType, size = o.Value.Size, fileName = o.Value.FileName, isDirectory = o.Value.IsDirectory }),
    };

    private static async Task Events(string id, HttpContext http, IRunLedger ledger, RunEvents events, CancellationToken ct)
    {
        if (await ledger.GetRunAsync(id, ct) is null)
        {
            http.Response.StatusCode = StatusCodes.Status404NotFound;
            await http.Response.WriteAsJsonAsync(new { error = $"no run \"{id}\"" }, ct);
            return;
        }
        http.Response.Headers.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        var (reader, subscription) = events.Subscribe(id);
        using var _ = subscription;
        var seen = new Dictionary<string, string>(StringComparer.Ordinal);
        async Task Send(string type, object data)
        {
            await http.Response.WriteAsync($"event: {type}\ndata: {JsonSerializer.Serialize(data, Web)}\n\n", ct);
            await http.Response.Body.FlushAsync(ct);
        }
        while (!ct.IsCancellationRequested)
        {
            while (reader.TryRead(out var e))
            {
                await Send(e.Type, new { runId = e.RunId, stepId = e.StepId, data = e.Data });
            }
            foreach (var step in await ledger.GetStepsAsync(id, ct))
            {
                var state = $"{step.Status}|{step.Error}";
                if (!seen.TryGetValue(step.StepId, out var old) || old != state)
                {
                    seen[step.StepId] = state;
                    await Send("step", Step(step));
                }
            }
            var run = await ledger.GetRunAsync(id, ct);
            if (run is not null && run.Status != RunStatus.Running)
            {
                await Send("run", Summary(run));
                return;
            }
            try
            {
                await reader.WaitToReadAsync(ct).AsTask().WaitAsync(TimeSpan.FromMilliseconds(500), ct);
            }
            catch (TimeoutException)
            {
            }
        }
    }
}
