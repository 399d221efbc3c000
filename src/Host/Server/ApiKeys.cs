using System.Net;
using System.Security.Cryptography;
using System.Text;
using Hangfire.Dashboard;
using Microsoft.AspNetCore.Http;

namespace Pipelines.Host.Server;

/// <summary>
/// The API key: mutating requests (POST, PUT, DELETE under /api) must carry it as <c>X-Api-Key</c> or
/// <c>Authorization: Bearer</c>. The dashboard is open to local requests; remote users need the key (header, or once
/// as <c>?key=</c>, which sets a cookie).
/// </summary>
public sealed class ApiKeys(string key)
{
    public const string Header = "X-Api-Key";
    private const string Cookie = "pipelines_key";

    public bool Matches(string? candidate) => candidate is not null
        && CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(candidate), Encoding.UTF8.GetBytes(key));

    public bool IsAuthorized(HttpContext http)
    {
        var header = http.Request.Headers[Header].FirstOrDefault();
        var bearer = http.Request.Headers.Authorization.FirstOrDefault() is { } auth && auth.StartsWith("Bearer ", StringComparison.Ordinal) ? auth[7..] : null;
        return Matches(header) || Matches(bearer) || Matches(http.Request.Cookies[Cookie]);
    }

    public async Task Middleware(HttpContext http, RequestDelegate next)
    {
        var mutating = HttpMethods.IsPost(http.Request.Method) || HttpMethods.IsPut(http.Request.Method) || HttpMethods.IsDelete(http.Request.Method) || HttpMethods.IsPatch(http.Request.Method);
        if (mutating && http.Request.Path.StartsWithSegments("/api") && !http.Request.Path.StartsWithSegments("/api/workflows/validate") && !IsAuthorized(http))
        {
            http.Response.StatusCode = StatusCodes.Status401Unauthorized;
            await http.Response.WriteAsJsonAsync(new { error = $"this request changes state: send the API key in the {Header} header (or Authorization: Bearer)" });
            return;
        }
        await next(http);
    }

    /// <summary>Dashboard access: loopback, or the key.</summary>
    public sealed class DashboardFilter(ApiKeys keys) : IDashboardAuthorizationFilter
    {
        public bool Authorize(DashboardContext context)
        {
            var http = context.GetHttpContext();
            var remote = http.Connection.RemoteIpAddress;
            if (remote is null || IPAddress.IsLoopback(remote))
            {
                return true;
            }
            if (http.Request.Query["key"].FirstOrDefault() is { } query && keys.Matches(query))
            {
                http.Response.Cookies.Append(Cookie, query, new CookieOptions { HttpOnly = true, SameSite = SameSiteMode.Strict });
                return true;
            }
            return keys.IsAuthorized(http);
        }
    }
}
