using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Pipelines.Engine.Activities;

namespace Pipelines.Host.Server.Api;

/// <summary>GET /api/activities[/{type}]: the descriptors that drive the CLI listing, the schema and the designer.</summary>
public static class ActivitiesApi
{
    public static void Map(IEndpointRouteBuilder app)
    {
        var group = app.MapGroup("/api/activities").WithTags("Activities");
        group.MapGet("/", (ActivityRegistry registry) => registry.All.Select(a => a.Descriptor))
            .WithSummary("Every activity's descriptor: type, version, category, input and output ports");
        group.MapGet("/{type}", (string type, ActivityRegistry registry) =>
                registry.All.FirstOrDefault(a => a.Descriptor.Type == type) is { } a ? Results.Ok(a.Descriptor) : Results.NotFound(new { error = $"no activity \"{type}\"" }))
            .WithSummary("One activity's descriptor").Responds(StatusCodes.Status200OK, StatusCodes.Status404NotFound);
    }
}
