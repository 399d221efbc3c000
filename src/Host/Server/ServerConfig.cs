using System.Security.Cryptography;

namespace Pipelines.Host.Server;

/// <summary>
/// Where the server and workers keep things and how they are reached. Each value comes from a command-line option,
/// else an environment variable (named beside it), else a default.
/// </summary>
public sealed record ServerConfig
{
    /// <summary>The artifact store, shared by the server and every worker (PIPELINES_STORE).</summary>
    public required string Store { get; init; }

    /// <summary>A PostgreSQL connection string for the ledger and Hangfire (PIPELINES_DATABASE); null: the embedded default.</summary>
    public string? Database { get; init; }

    /// <summary>Where the server listens (PIPELINES_URLS); loopback unless told otherwise.</summary>
    public string Urls { get; init; } = "http://127.0.0.1:5080";

    /// <summary>The key mutating requests must carry (PIPELINES_API_KEY); generated into the store on first start if unset.</summary>
    public string? ApiKey { get; init; }

    /// <summary>Saved workflows (PIPELINES_WORKFLOWS), default ./workflows.</summary>
    public required string WorkflowsDirectory { get; init; }

    /// <summary>Relative paths in workflows resolve here (the working directory).</summary>
    public required string ProjectRoot { get; init; }

    /// <summary>Extra roots workflow paths may reach (PIPELINES_ALLOWED_ROOTS, ':'-separated).</summary>
    public IReadOnlyList<string> AllowedRoots { get; init; } = [];

    /// <summary>The Hangfire queues this process works on; empty: none (a server that only schedules).</summary>
    public IReadOnlyList<string> Queues { get; init; } = ["default", "gpu"];

    /// <summary>Hangfire workers in this process (steps run in parallel up to this).</summary>
    public int WorkerCount { get; init; } = 2;

    /// <summary>How long a fetched step stays invisible to other workers without a heartbeat (PIPELINES_INVISIBILITY_SECONDS).</summary>
    public TimeSpan InvisibilityTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>The largest request body accepted.</summary>
    public long MaxRequestBytes { get; init; } = 16 * 1024 * 1024;

    public bool IsEmbedded => string.IsNullOrWhiteSpace(Database);

    public static ServerConfig FromEnvironment(string? store, string? database, string? urls, IReadOnlyList<string>? queues, int? workers)
    {
        string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;
        var root = Directory.GetCurrentDirectory();
        return new ServerConfig
        {
            Store = Path.GetFullPath(store ?? Env("PIPELINES_STORE") ?? "artifacts"),
            Database = database ?? Env("PIPELINES_DATABASE"),
            Urls = urls ?? Env("PIPELINES_URLS") ?? "http://127.0.0.1:5080",
            ApiKey = Env("PIPELINES_API_KEY"),
            WorkflowsDirectory = Path.GetFullPath(Env("PIPELINES_WORKFLOWS") ?? "workflows"),
            ProjectRoot = root,
            AllowedRoots = (Env("PIPELINES_ALLOWED_ROOTS") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries).Select(Path.GetFullPath).ToList(),
            Queues = queues ?? (Env("PIPELINES_QUEUES")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)) ?? ["default", "gpu"],
            WorkerCount = workers ?? (int.TryParse(Env("PIPELINES_WORKERS"), out var w) ? w : 2),
            InvisibilityTimeout = int.TryParse(Env("PIPELINES_INVISIBILITY_SECONDS"), out var s) ? TimeSpan.FromSeconds(s) : TimeSpan.FromMinutes(5),
        };
    }

    /// <summary>The configured key, or the one kept in the store (created, and printed by the caller, on first start).</summary>
    public (string Key, bool Generated) ResolveApiKey()
    {
        if (!string.IsNullOrEmpty(ApiKey))
        {
            return (ApiKey, false);
        }
        var file = Path.Combine(Store, "server", "api-key");
        if (File.Exists(file))
        {
            return (File.ReadAllText(file).Trim(), false);
        }
        Directory.CreateDirectory(Path.GetDirectoryName(file)!);
        var key = "pk_" + Convert.ToHexString(RandomNumberGenerator.GetBytes(24)).ToLowerInvariant();
        File.WriteAllText(file, key + "\n");
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(file, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        return (key, true);
    }
}
