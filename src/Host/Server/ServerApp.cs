using Hangfire;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Pipelines.Host.Server.Api;

namespace Pipelines.Host.Server;

/// <summary>Builds the two long-running processes: <c>pipelines serve</c> (API, dashboard, designer, Hangfire server) and <c>pipelines worker</c>.</summary>
public static class ServerApp
{
    public static WebApplication BuildServer(ServerConfig config, string apiKey)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory, WebRootPath = Path.Combine(AppContext.BaseDirectory, "wwwroot") });
        builder.WebHost.UseUrls(config.Urls.Split(';', StringSplitOptions.RemoveEmptyEntries));
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = config.MaxRequestBytes);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
        builder.Logging.SetMinimumLevel(LogLevel.Warning).AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Information);
        builder.Services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.Converters.Add(new System.Text.Json.Serialization.JsonStringEnumConverter(System.Text.Json.JsonNamingPolicy.KebabCaseLower));
        });
        builder.Services.AddPipelinesServer(config);
        builder.Services.AddOpenApi(OpenApiDocs.Configure);
        builder.Services.AddSingleton(new ApiKeys(apiKey));
        var app = builder.Build();
        var keys = app.Services.GetRequiredService<ApiKeys>();
        app.Use(keys.Middleware);
        app.UseDefaultFiles();
        app.UseStaticFiles();
        app.MapOpenApi("/openapi/{documentName}.json");
        app.MapGet("/api/health", (ServerConfig c) => new { status = "ok", storage = c.IsEmbedded ? "embedded" : "postgresql" }).WithTags("Health");
        ActivitiesApi.Map(app);
        WorkflowsApi.Map(app);
        RunsApi.Map(app);
        ArtifactsApi.Map(app);
        app.MapHangfireDashboard("/hangfire", new DashboardOptions
        {
            Authorization = [new ApiKeys.DashboardFilter(keys)],
            DisplayNameFunc = (_, job) => JobNames.Display(job),
        });
        CheckpointWatcher.Sync(app.Services.GetRequiredService<IRecurringJobManager>(), app.Services.GetRequiredService<JobStorage>(), config, Console.Error.WriteLine);
        return app;
    }

    public static IHost BuildWorker(ServerConfig config)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
        builder.Logging.SetMinimumLevel(LogLevel.Warning).AddFilter("Microsoft.Hosting.Lifetime", LogLevel.Information);
        builder.Services.AddPipelinesServer(config);
        return builder.Build();
    }
}
