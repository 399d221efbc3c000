using System.CommandLine;
using Microsoft.Extensions.Hosting;
using Pipelines.Host.Server;
using Spectre.Console;

namespace Pipelines.Host.Cli;

/// <summary><c>pipelines serve</c> and <c>pipelines worker</c>.</summary>
public static class ServerCommands
{
    private static Option<string?> Database() => new("--database")
    {
        Description = "PostgreSQL connection string for the ledger and Hangfire (default: $PIPELINES_DATABASE; none: embedded SQLite + in-process Hangfire)",
    };

    public static Command Serve(GlobalOptions g)
    {
        var database = Database();
        var urls = new Option<string?>("--urls") { Description = "Where to listen (default: $PIPELINES_URLS or http://127.0.0.1:5080)" };
        var workers = new Option<int?>("--workers") { Description = "Steps this process runs at once (0: schedule only, leave steps to workers)" };
        var queues = new Option<string?>("--queues") { Description = "Queues this process works on (default: default,gpu)" };
        var command = new Command("serve", "Start the server: REST API, OpenAPI, Hangfire server and dashboard (/hangfire), designer") { database, urls, workers, queues };
        command.SetAction(async (p, ct) =>
        {
            var config = ServerConfig.FromEnvironment(p.GetValue(g.Store), p.GetValue(database), p.GetValue(urls), Queues(p.GetValue(queues)), p.GetValue(workers));
            var (key, generated) = config.ResolveApiKey();
            if (generated)
            {
                Console.WriteLine($"generated an API key for mutating requests (kept in {Path.Combine(config.Store, "server", "api-key")}):");
                Console.WriteLine($"  {key}");
            }
            try
            {
                Pipelines.Models.Runtime.TorchRuntime.EnsureLoaded();
                await using var app = ServerApp.BuildServer(config, key);
                Console.WriteLine($"pipelines serve: {config.Urls} · storage {(config.IsEmbedded ? "embedded (SQLite + in-process Hangfire)" : "PostgreSQL")} · store {config.Store} · queues {string.Join(",", config.Queues)}");
                await app.StartAsync(ct);
                await app.WaitForShutdownAsync(ct);
                return ExitCodes.Ok;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                Output.Error.MarkupLine($"[red bold]error:[/] {Markup.Escape(e.Message)}");
                return ExitCodes.Failed;
            }
        });
        return command;
    }

    public static Command Worker(GlobalOptions g)
    {
        var database = Database();
        var queues = new Option<string?>("--queues") { Description = "Queues to work on, e.g. default,gpu (default: default)" };
        var workers = new Option<int?>("--workers") { Description = "Steps this worker runs at once (default: 1)" };
        var command = new Command("worker", "Run steps from the shared PostgreSQL queue (needs --database or $PIPELINES_DATABASE)") { database, queues, workers };
        command.SetAction(async (p, ct) =>
        {
            var config = ServerConfig.FromEnvironment(p.GetValue(g.Store), p.GetValue(database), null, Queues(p.GetValue(queues)) ?? ["default"], p.GetValue(workers) ?? 1);
            if (config.IsEmbedded)
            {
                Output.Error.MarkupLine("[red bold]error:[/] a worker shares the server's queue through PostgreSQL: give --database or set PIPELINES_DATABASE (the embedded storage lives inside `pipelines serve`)");
                return ExitCodes.Invalid;
            }
            try
            {
                Pipelines.Models.Runtime.TorchRuntime.EnsureLoaded();
                using var host = ServerApp.BuildWorker(config);
                Console.WriteLine($"pipelines worker: queues {string.Join(",", config.Queues)} · {config.WorkerCount} at once · store {config.Store}");
                await host.StartAsync(ct);
                await host.WaitForShutdownAsync(ct);
                return ExitCodes.Ok;
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                Output.Error.MarkupLine($"[red bold]error:[/] {Markup.Escape(e.Message)}");
                return ExitCodes.Failed;
            }
        });
        return command;
    }

    /// <summary><c>pipelines health</c>: for container health checks (the images have no curl).</summary>
    public static Command Health(GlobalOptions g)
    {
        var url = new Option<string?>("--url") { Description = "Check a server: GET URL/api/health" };
        var database = new Option<bool>("--database") { Description = "Check that PostgreSQL ($PIPELINES_DATABASE) answers" };
        var command = new Command("health", "Exit 0 when the server (--url) or the database (--database) answers, 1 otherwise") { url, database };
        command.SetAction(async (p, ct) =>
        {
            try
            {
                if (p.GetValue(url) is { } u)
                {
                    using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
                    using var response = await http.GetAsync(u.TrimEnd('/') + "/api/health", ct);
                    Console.WriteLine($"{u}: {(int)response.StatusCode}");
                    return response.IsSuccessStatusCode ? ExitCodes.Ok : ExitCodes.Failed;
                }
                if (p.GetValue(database))
                {
                    var cs = Environment.GetEnvironmentVariable("PIPELINES_DATABASE");
                    if (string.IsNullOrEmpty(cs))
                    {
                        Output.Error.MarkupLine("[red bold]error:[/] PIPELINES_DATABASE is not set");
                        return ExitCodes.Invalid;
                    }
                    await using var c = new Npgsql.NpgsqlConnection(cs);
                    await c.OpenAsync(ct);
                    await using var cmd = new Npgsql.NpgsqlCommand("SELECT 1", c);
                    await cmd.ExecuteScalarAsync(ct);
                    Console.WriteLine("database: ok");
                    return ExitCodes.Ok;
                }
                Output.Error.MarkupLine("[red bold]error:[/] give --url or --database");
                return ExitCodes.Invalid;
            }
            catch (Exception e) when (e is HttpRequestException or Npgsql.NpgsqlException or TaskCanceledException or System.Net.Sockets.SocketException)
            {
                Console.WriteLine($"unhealthy: {e.Message}");
                return ExitCodes.Failed;
            }
        });
        return command;
    }

    private static List<string>? Queues(string? value) =>
        value?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).ToList();
}
