using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;
using Pipelines.Engine.Definitions;

namespace Pipelines.Host.Server.Api;

/// <summary>
/// Workflows as the CLI runs them: JSON files in the server's workflows directory, saved byte for byte. Names are
/// file stems of letters, digits, '-' and '_', so no request reaches outside the directory.
/// </summary>
public static partial class WorkflowsApi
{
    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    private static partial Regex NamePattern();

    public static string? FileFor(ServerConfig config, string name) =>
        NamePattern().IsMatch(name) && !name.Contains("..", StringComparison.Ordinal) ? Path.Combine(config.WorkflowsDirectory, name + ".json") : null;

    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/api/workflows").WithTags("Workflows");
        group.MapGet("/", (ServerConfig config) =>
        {
            if (!Directory.Exists(config.WorkflowsDirectory))
            {
                return Results.Ok(Array.Empty<object>());
            }
            var list = Directory.EnumerateFiles(config.WorkflowsDirectory, "*.json")
                .Where(f => !f.EndsWith(".schema.json", StringComparison.Ordinal))
                .Order(StringComparer.Ordinal)
                .Select(f =>
                {
                    string? description = null;
                    try
                    {
                        description = JsonNode.Parse(WorkflowParser.ReadText(f))?["description"]?.GetValue<string>();
                        description = description is not null && WorkflowParser.IsValidUnicode(description) ? description : null;
                    }
                    catch (Exception e) when (e is JsonException or InvalidOperationException or WorkflowInvalidException or IOException)
                    {
                        description = "(unreadable: not a valid UTF-8 JSON workflow)"; // listed, so it can be fixed or deleted
                    }
                    return new { name = Path.GetFileNameWithoutExtension(f), description, modified = File.GetLastWriteTimeUtc(f) };
                });
            return Results.Ok(list);
        }).WithSummary("The saved workflows").Responds(StatusCodes.Status200OK);

        group.MapGet("/{name}", (string name, ServerConfig config) =>
            FileFor(config, name) is { } file && File.Exists(file)
                ? Results.Text(File.ReadAllText(file), "application/json", Encoding.UTF8)
                : Results.NotFound(new { error = $"no workflow \"{name}\"" }))
            .WithSummary("A workflow's JSON, exactly as saved").Responds(StatusCodes.Status200OK, StatusCodes.Status404NotFound);

        group.MapPut("/{name}", async (string name, HttpRequest request, ServerConfig config, RunScheduler scheduler) =>
        {
            if (FileFor(config, name) is not { } file)
            {
                return Results.BadRequest(new { error = "a workflow name has letters, digits, '.', '-' and '_' only" });
            }
            var shownFile = name + ".json";
            if (await ReadBody(request, shownFile) is not { } text)
            {
                return Results.BadRequest(new { error = $"{shownFile}: invalid UTF-8; expected a UTF-8 JSON workflow" });
            }
            // Only what the server can read back is saved: a draft with semantic errors is kept (the designer saves
            // work in progress), but text that does not parse, or triggers the recurring jobs would refuse, is not.
            var structural = new List<Diagnostic>();
            var parsed = WorkflowParser.ParseLenient(text, shownFile, structural);
            var unreadable = structural.Where(d => parsed is null || d.JsonPath.StartsWith("$.triggers", StringComparison.Ordinal) || d.JsonPath.StartsWith("$.name", StringComparison.Ordinal)).ToList();
            if (parsed is null || unreadable.Count > 0)
            {
                return Results.BadRequest(new { error = "not saved: " + (unreadable.FirstOrDefault()?.ToString() ?? "expected a JSON object (a workflow)"), diagnostics = unreadable });
            }
            Directory.CreateDirectory(config.WorkflowsDirectory);
            var existed = File.Exists(file);
            await File.WriteAllTextAsync(file + ".tmp", text, new UTF8Encoding(false));
            File.Move(file + ".tmp", file, overwrite: true);
            var diagnostics = Validate(scheduler, text, shownFile);
            SyncTriggers(request.HttpContext.RequestServices);
            return existed ? Results.Ok(new { name, valid = diagnostics.Count == 0, diagnostics })
                : Results.Created($"/api/workflows/{name}", new { name, valid = diagnostics.Count == 0, diagnostics });
        }).WithSummary("Create or replace a workflow (saved even when invalid, with its diagnostics)")
          .Responds(StatusCodes.Status200OK, StatusCodes.Status201Created, StatusCodes.Status400BadRequest);

        group.MapDelete("/{name}", (string name, ServerConfig config, HttpContext http) =>
        {
            if (FileFor(config, name) is not { } file || !File.Exists(file))
            {
                return Results.NotFound(new { error = $"no workflow \"{name}\"" });
            }
            File.Delete(file);
            SyncTriggers(http.RequestServices);
            return Results.NoContent();
        }).WithSummary("Delete a workflow").Responds(StatusCodes.Status204NoContent, StatusCodes.Status404NotFound);

        group.MapPost("/{name}/triggers/{trigger}/check", async (string name, string trigger, CheckpointWatcher watcher, CancellationToken ct) =>
            Results.Ok(await watcher.CheckAsync(name, trigger, ct)))
            .WithSummary("Run a checkpoint trigger's check now: one run per new, complete checkpoint").Responds(StatusCodes.Status200OK);

        group.MapPost("/validate", async (HttpRequest request, RunScheduler scheduler) =>
        {
            // JSON only: a web page can post text/plain or a form cross-origin without a preflight, never application/json.
            if (!IsJson(request))
            {
                return Results.Json(new { error = "expected Content-Type: application/json" }, statusCode: StatusCodes.Status415UnsupportedMediaType);
            }
            if (await ReadBody(request, "request.json") is not { } text)
            {
                return Results.Ok(new { valid = false, diagnostics = new[] { new Diagnostic("request.json", "$", "invalid UTF-8; expected a UTF-8 JSON workflow") } });
            }
            var parameters = request.Query.ToDictionary(q => q.Key, q => q.Value.ToString());
            var diagnostics = Validate(scheduler, text, "request.json", parameters);
            return Results.Ok(new { valid = diagnostics.Count == 0, diagnostics });
        }).WithSummary("Validate a workflow (the body) with query-string parameters; every problem with its JSON path")
          .Responds(StatusCodes.Status200OK, StatusCodes.Status415UnsupportedMediaType);
    }

    private static void SyncTriggers(IServiceProvider services) =>
        CheckpointWatcher.Sync(services.GetRequiredService<Hangfire.IRecurringJobManager>(), services.GetRequiredService<Hangfire.JobStorage>(), services.GetRequiredService<ServerConfig>(), Console.Error.WriteLine);

    private static bool IsJson(HttpRequest request) =>
        Microsoft.Net.Http.Headers.MediaTypeHeaderValue.TryParse(request.ContentType, out var media) &&
        (media.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase) || media.Suffix.Equals("json", StringComparison.OrdinalIgnoreCase));

    /// <summary>The body as strict UTF-8 (invalid bytes: null, never silently replaced); Kestrel bounds its size.</summary>
    private static async Task<string?> ReadBody(HttpRequest request, string file)
    {
        using var buffer = new MemoryStream();
        await request.Body.CopyToAsync(buffer);
        try
        {
            return WorkflowParser.DecodeUtf8(buffer.GetBuffer().AsSpan(0, (int)buffer.Length), file);
        }
        catch (WorkflowInvalidException)
        {
            return null;
        }
    }

    public static IReadOnlyList<Diagnostic> Validate(RunScheduler scheduler, string text, string file, IReadOnlyDictionary<string, string>? parameters = null)
    {
        try
        {
            scheduler.Compile(new Submission(text, file, parameters ?? new Dictionary<string, string>()));
            return [];
        }
        catch (WorkflowInvalidException e)
        {
            return e.Diagnostics;
        }
    }
}
