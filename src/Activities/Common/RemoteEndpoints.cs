namespace Pipelines.Activities;

/// <summary>
/// What a workflow may send to a remote model API. A workflow names the environment variable holding its API key;
/// only variables on an allow-list may be read and sent (so a workflow cannot post PIPELINES_DATABASE or any other
/// secret of the machine to an address of its choosing), and a deployment may restrict the endpoints themselves.
/// </summary>
public static class RemoteEndpoints
{
    /// <summary>API-key variables allowed by default.</summary>
    public static readonly IReadOnlyList<string> DefaultKeyVariables = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PIPELINES_LLM_API_KEY"];

    /// <summary>The allow-list: the defaults plus PIPELINES_SECRET_VARIABLES (comma- or colon-separated names).</summary>
    public static IReadOnlyList<string> AllowedKeyVariables() =>
        DefaultKeyVariables.Concat((Environment.GetEnvironmentVariable("PIPELINES_SECRET_VARIABLES") ?? "")
            .Split([',', ':'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).Distinct(StringComparer.Ordinal).ToList();

    /// <summary>Null when the variable may be sent; otherwise why not.</summary>
    public static string? CheckKeyVariable(string name) =>
        name.Length == 0 || AllowedKeyVariables().Contains(name, StringComparer.Ordinal) ? null
            : $"the API key variable \"{Engine.Definitions.WorkflowParser.Short(name)}\" is not on the allow-list ({string.Join(", ", AllowedKeyVariables())}); " +
              "an administrator adds names with PIPELINES_SECRET_VARIABLES";

    /// <summary>
    /// Null when the endpoint may be called; otherwise why not. With PIPELINES_LLM_ENDPOINTS set (comma-separated URL
    /// prefixes, e.g. "http://127.0.0.1:8000/,https://api.openai.com/"), only endpoints under one of them are allowed.
    /// </summary>
    public static string? CheckEndpoint(string endpoint)
    {
        if (endpoint.Length == 0)
        {
            return null;
        }
        if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri) || (uri.Scheme != "http" && uri.Scheme != "https") || uri.UserInfo.Length > 0)
        {
            return $"\"{Engine.Definitions.WorkflowParser.Short(endpoint)}\" is not an http(s) URL without credentials";
        }
        var allowed = (Environment.GetEnvironmentVariable("PIPELINES_LLM_ENDPOINTS") ?? "")
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return allowed.Length == 0 || allowed.Any(a => uri.AbsoluteUri.StartsWith(a, StringComparison.OrdinalIgnoreCase)) ? null
            : $"the endpoint {uri.GetLeftPart(UriPartial.Authority)} is not one this installation allows (PIPELINES_LLM_ENDPOINTS)";
    }
}
