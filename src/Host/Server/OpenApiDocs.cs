using Microsoft.AspNetCore.OpenApi;
using Microsoft.OpenApi;

namespace Pipelines.Host.Server;

/// <summary>
/// What the OpenAPI document says beyond the endpoints' own metadata: the API key (a header, <c>X-Api-Key</c>, or
/// <c>Authorization: Bearer</c>), required by every request that changes state, and the 401 those requests answer
/// without it.
/// </summary>
public static class OpenApiDocs
{
    public const string Scheme = "ApiKey";

    public static void Configure(OpenApiOptions options)
    {
        options.AddDocumentTransformer((document, _, _) =>
        {
            document.Info.Title = "Pipelines";
            document.Info.Description = "Workflows, runs, artifacts and activities of a Pipelines server. Requests that change state "
                + $"(POST, PUT, DELETE under /api, except POST /api/workflows/validate) need the API key in the {ApiKeys.Header} header "
                + "or as Authorization: Bearer KEY; without it they answer 401.";
            document.Components ??= new OpenApiComponents();
            document.Components.SecuritySchemes ??= new Dictionary<string, IOpenApiSecurityScheme>();
            document.Components.SecuritySchemes[Scheme] = new OpenApiSecurityScheme
            {
                Type = SecuritySchemeType.ApiKey,
                In = ParameterLocation.Header,
                Name = ApiKeys.Header,
                Description = "The server's API key (PIPELINES_API_KEY, or the one `pipelines serve` printed at start).",
            };
            return Task.CompletedTask;
        });
        options.AddOperationTransformer((operation, context, _) =>
        {
            var method = context.Description.HttpMethod ?? "GET";
            var path = "/" + (context.Description.RelativePath ?? "");
            if (method is "GET" or "HEAD" || !path.StartsWith("/api/", StringComparison.Ordinal) || path.StartsWith("/api/workflows/validate", StringComparison.Ordinal))
            {
                return Task.CompletedTask;
            }
            operation.Security ??= [];
            operation.Security.Add(new OpenApiSecurityRequirement { [new OpenApiSecuritySchemeReference(Scheme, context.Document)] = [] });
            operation.Responses ??= new OpenApiResponses();
            operation.Responses["401"] = new OpenApiResponse { Description = $"No API key, or a wrong one: send it in the {ApiKeys.Header} header" };
            return Task.CompletedTask;
        });
    }
}
