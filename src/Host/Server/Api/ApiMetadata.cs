using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace Pipelines.Host.Server.Api;

/// <summary>Status codes an endpoint answers, for the OpenAPI document (401 on state-changing requests is added by <see cref="OpenApiDocs"/>).</summary>
public static class ApiMetadata
{
    public static RouteHandlerBuilder Responds(this RouteHandlerBuilder builder, params int[] statusCodes)
    {
        foreach (var code in statusCodes)
        {
            builder.Produces(code, contentType: code == StatusCodes.Status204NoContent ? null : "application/json");
        }
        return builder;
    }
}
