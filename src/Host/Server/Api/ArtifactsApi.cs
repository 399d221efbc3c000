using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Pipelines.Engine.Artifacts;

namespace Pipelines.Host.Server.Api;

/// <summary>Artifact download by digest, with the media type its producer declared; a directory lists its files.</summary>
public static partial class ArtifactsApi
{
    [GeneratedRegex("^[0-9a-f]{64}$")]
    private static partial Regex Digest();

    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/api/artifacts").WithTags("Artifacts");
        group.MapGet("/{digest}", (string digest, ArtifactStore store) => Serve(store, digest, null))
            .WithSummary("An artifact: the file with its media type, or a directory's file list").Responds(StatusCodes.Status200OK, StatusCodes.Status404NotFound);
        group.MapGet("/{digest}/{*path}", (string digest, string path, ArtifactStore store) => Serve(store, digest, path))
            .WithSummary("A file inside a directory artifact").Responds(StatusCodes.Status200OK, StatusCodes.Status404NotFound);
    }

    private static IResult Serve(ArtifactStore store, string digest, string? inner)
    {
        if (!Digest().IsMatch(digest) || store.ReadManifest(digest) is not { } manifest)
        {
            return Results.NotFound(new { error = $"no artifact {digest}" });
        }
        var root = Path.GetFullPath(store.ObjectPath(digest));
        if (inner is null && !manifest.IsDirectory)
        {
            return Results.File(root, manifest.MediaType, Inline(manifest.MediaType) ? null : manifest.FileName);
        }
        if (inner is null)
        {
            var files = Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
                .Select(f => Path.GetRelativePath(root, f).Replace('\\', '/')).Order(StringComparer.Ordinal);
            return Results.Ok(new { digest, kind = manifest.Kind, fileName = manifest.FileName, files });
        }
        var full = Path.GetFullPath(Path.Combine(root, inner));
        if (!full.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal) || !File.Exists(full))
        {
            return Results.NotFound(new { error = $"no file \"{inner}\" in artifact {digest}" });
        }
        var type = MediaTypes.For(full);
        return Results.File(full, type, Inline(type) ? null : Path.GetFileName(full));
    }

    /// <summary>Reports, plots and JSON open in the browser (the designer's viewer frames them); the rest downloads.</summary>
    private static bool Inline(string mediaType) =>
        mediaType.StartsWith("text/", StringComparison.Ordinal) || mediaType.StartsWith("image/", StringComparison.Ordinal)
        || mediaType is "application/json" or "application/x-ndjson";
}

/// <summary>Media types by extension for files inside directory artifacts.</summary>
public static class MediaTypes
{
    public static string For(string path) => Path.GetExtension(path).ToLowerInvariant() switch
    {
        ".json" => "application/json",
        ".jsonl" => "application/x-ndjson",
        ".html" => "text/html",
        ".png" => "image/png",
        ".svg" => "image/svg+xml",
        ".csv" => "text/csv",
        ".txt" => "text/plain",
        ".safetensors" => "application/octet-stream",
        _ => "application/octet-stream",
    };
}
