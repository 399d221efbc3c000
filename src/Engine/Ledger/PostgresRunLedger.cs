using System.Text.Json;
using Npgsql;
using NpgsqlTypes;
using Pipelines.Engine.Artifacts;

namespace Pipelines.Engine.Ledger;

/// <summary>
/// The shared ledger: PostgreSQL, for a server and many workers. The schema lives in <c>pipelines</c> and is migrated
/// at start (versions in <c>pipelines.schema_version</c>, under an advisory lock so concurrent starts are safe).
/// Transient connection failures (a restarting server) are retried for up to <see cref="RetryWindow"/>.
/// </summary>
public sealed class PostgresRunLedger : IRunLedger
{
    private const int SchemaVersion = 2;
    private readonly NpgsqlDataSource _source;

    public static TimeSpan RetryWindow { get; set; } = TimeSpan.FromSeconds(60);

    public PostgresRunLedger(string connectionString)
    {
        _source = NpgsqlDataSource.Create(connectionString);
        Retry(() => Migrate(), CancellationToken.None).GetAwaiter().GetResult();
    }

    private async Task<int> Migrate()
    {
        await using var c = await _source.OpenConnectionAsync();
        await using var tx = await c.BeginTransactionAsync();
        await Exec(c, tx, "SELECT pg_advisory_xact_lock(727274)");
        await Exec(c, tx, "CREATE SCHEMA IF NOT EXISTS pipelines; CREATE TABLE IF NOT EXISTS pipelines.schema_version (version INT NOT NULL)");
        await using var read = new NpgsqlCommand("SELECT COALESCE(MAX(version), 0) FROM pipelines.schema_version", c, tx);
        var version = Convert.ToInt32(await read.ExecuteScalarAsync(), System.Globalization.CultureInfo.InvariantCulture);
        if (version < 1)
        {
            await Exec(c, tx, """
                CREATE TABLE pipelines.runs (
                    id TEXT PRIMARY KEY, workflow_name TEXT NOT NULL, workflow_file TEXT NOT NULL, workflow_text TEXT NOT NULL,
                    overrides JSONB NOT NULL, base_directory TEXT NOT NULL, allowed_roots JSONB NOT NULL,
                    kind TEXT NOT NULL, origin_run TEXT, status TEXT NOT NULL,
                    started_at TIMESTAMPTZ NOT NULL, ended_at TIMESTAMPTZ, error TEXT);
                CREATE INDEX runs_by_name ON pipelines.runs(workflow_name, started_at);
                CREATE TABLE pipelines.steps (
                    run_id TEXT NOT NULL REFERENCES pipelines.runs(id) ON DELETE CASCADE, step_id TEXT NOT NULL, ordinal SERIAL,
                    activity TEXT NOT NULL, activity_version INT NOT NULL, status TEXT NOT NULL,
                    cache_key TEXT, key_material TEXT, started_at TIMESTAMPTZ, ended_at TIMESTAMPTZ, duration_ms DOUBLE PRECISION,
                    error TEXT, outputs JSONB, cached_from TEXT, PRIMARY KEY (run_id, step_id));
                INSERT INTO pipelines.schema_version VALUES (1);
                """);
        }
        if (version < 2)
        {
            await Exec(c, tx, """
                CREATE TABLE pipelines.checkpoints (
                    workflow TEXT NOT NULL, trigger_id TEXT NOT NULL, digest TEXT NOT NULL, path TEXT NOT NULL, run_id TEXT,
                    seen_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (workflow, trigger_id, digest));
                INSERT INTO pipelines.schema_version VALUES (2);
                """);
        }
        await tx.CommitAsync();
        return version;
    }

    /// <summary>Runs <paramref name="action"/>, retrying on connection failures for up to <see cref="RetryWindow"/>.</summary>
    private static async Task<T> Retry<T>(Func<Task<T>> action, CancellationToken ct)
    {
        var deadline = DateTime.UtcNow + RetryWindow;
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await action();
            }
            catch (Exception e) when (IsTransient(e) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(2000, 100 * attempt)), ct);
            }
        }
    }

    private static bool IsTransient(Exception e) => e switch
    {
        NpgsqlException { IsTransient: true } => true,
        PostgresException p => p.SqlState is "57P01" or "57P02" or "57P03" or "08006" or "08001" or "08003" or "08004",
        NpgsqlException { InnerException: System.Net.Sockets.SocketException or IOException or TimeoutException } => true,
        _ => false,
    };

    private async Task<T> With<T>(Func<NpgsqlConnection, Task<T>> action, CancellationToken ct) => await Retry(async () =>
    {
        await using var c = await _source.OpenConnectionAsync(ct);
        return await action(c);
    }, ct);

    private static async Task Exec(NpgsqlConnection c, NpgsqlTransaction? tx, string sql, params (string Name, object? Value)[] args)
    {
        await using var cmd = Command(c, tx, sql, args);
        await cmd.ExecuteNonQueryAsync();
    }

    private static NpgsqlCommand Command(NpgsqlConnection c, NpgsqlTransaction? tx, string sql, params (string Name, object? Value)[] args)
    {
        var cmd = new NpgsqlCommand(sql, c, tx);
        foreach (var (name, value) in args)
        {
            cmd.Parameters.Add(value is JsonParameter j
                ? new NpgsqlParameter(name, NpgsqlDbType.Jsonb) { Value = (object?)j.Json ?? DBNull.Value }
                : new NpgsqlParameter(name, value ?? DBNull.Value));
        }
        return cmd;
    }

    private sealed record JsonParameter(string? Json);

    public Task CreateRunAsync(RunRecord run, CancellationToken ct = default) => With(async c =>
    {
        await Exec(c, null, """
            INSERT INTO pipelines.runs (id, workflow_name, workflow_file, workflow_text, overrides, base_directory, allowed_roots, kind, origin_run, status, started_at, ended_at, error)
            VALUES (@id, @name, @file, @text, @overrides, @base, @roots, @kind, @origin, @status, @started, @ended, @error)
            ON CONFLICT (id) DO UPDATE SET status = excluded.status, ended_at = NULL, error = NULL
            """,
            ("id", run.Id), ("name", run.WorkflowName), ("file", run.WorkflowFile), ("text", run.WorkflowText),
            ("overrides", new JsonParameter(JsonSerializer.Serialize(run.Overrides))), ("base", run.BaseDirectory),
            ("roots", new JsonParameter(JsonSerializer.Serialize(run.AllowedRoots))), ("kind", run.Kind.ToString()), ("origin", run.OriginRunId),
            ("status", run.Status.ToString()), ("started", run.StartedAt.ToUniversalTime()), ("ended", run.EndedAt?.ToUniversalTime()), ("error", run.Error));
        return 0;
    }, ct);

    public Task UpdateRunAsync(string runId, RunStatus status, DateTimeOffset? endedAt, string? error, CancellationToken ct = default) => With(async c =>
    {
        await Exec(c, null, "UPDATE pipelines.runs SET status = @status, ended_at = @ended, error = @error WHERE id = @id",
            ("id", runId), ("status", status.ToString()), ("ended", endedAt?.ToUniversalTime()), ("error", error));
        return 0;
    }, ct);

    public Task UpsertStepAsync(StepRecord step, CancellationToken ct = default) => UpsertStepsAsync([step], ct);

    public Task UpsertStepsAsync(IReadOnlyList<StepRecord> steps, CancellationToken ct = default) => With(async c =>
    {
        await using var tx = await c.BeginTransactionAsync(ct);
        foreach (var s in steps)
        {
            await Exec(c, tx, """
                INSERT INTO pipelines.steps (run_id, step_id, activity, activity_version, status, cache_key, key_material, started_at, ended_at, duration_ms, error, outputs, cached_from)
                VALUES (@run, @step, @activity, @version, @status, @key, @material, @started, @ended, @duration, @error, @outputs, @from)
                ON CONFLICT (run_id, step_id) DO UPDATE SET activity = excluded.activity, activity_version = excluded.activity_version,
                    status = excluded.status, cache_key = excluded.cache_key, key_material = excluded.key_material,
                    started_at = excluded.started_at, ended_at = excluded.ended_at, duration_ms = excluded.duration_ms,
                    error = excluded.error, outputs = excluded.outputs, cached_from = excluded.cached_from
                """,
                ("run", s.RunId), ("step", s.StepId), ("activity", s.Activity), ("version", s.ActivityVersion), ("status", s.Status.ToString()),
                ("key", s.CacheKey), ("material", s.KeyMaterial), ("started", s.StartedAt?.ToUniversalTime()), ("ended", s.EndedAt?.ToUniversalTime()),
                ("duration", s.DurationMs), ("error", s.Error),
                ("outputs", new JsonParameter(s.Outputs is null ? null : JsonSerializer.Serialize(s.Outputs, ArtifactStore.Json))), ("from", s.CachedFromRunId));
        }
        await tx.CommitAsync(ct);
        return 0;
    }, ct);

    public async Task<RunRecord?> GetRunAsync(string runId, CancellationToken ct = default) =>
        (await QueryRuns("SELECT * FROM pipelines.runs WHERE id = @id", ct, ("id", runId))).FirstOrDefault();

    public Task<IReadOnlyList<RunRecord>> ListRunsAsync(int limit, CancellationToken ct = default) =>
        QueryRuns("SELECT * FROM pipelines.runs ORDER BY started_at DESC, id DESC LIMIT @limit", ct, ("limit", limit));

    public Task<IReadOnlyList<StepRecord>> GetStepsAsync(string runId, CancellationToken ct = default) => With<IReadOnlyList<StepRecord>>(async c =>
    {
        var result = new List<StepRecord>();
        await using var cmd = Command(c, null, "SELECT * FROM pipelines.steps WHERE run_id = @run ORDER BY ordinal", ("run", runId));
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
        {
            var outputs = Text(r, "outputs");
            result.Add(new StepRecord(Text(r, "run_id")!, Text(r, "step_id")!, Text(r, "activity")!, r.GetInt32(r.GetOrdinal("activity_version")),
                Enum.Parse<StepStatus>(Text(r, "status")!), Text(r, "cache_key"), Text(r, "key_material"), Time(r, "started_at"), Time(r, "ended_at"),
                r.IsDBNull(r.GetOrdinal("duration_ms")) ? null : r.GetDouble(r.GetOrdinal("duration_ms")), Text(r, "error"),
                outputs is null ? null : JsonSerializer.Deserialize<Dictionary<string, OutputRecord>>(outputs, ArtifactStore.Json), Text(r, "cached_from")));
        }
        return result;
    }, ct);

    public async Task<(RunRecord Run, StepRecord Step)?> FindPreviousStepAsync(string workflowName, string stepId, DateTimeOffset before, string excludeRunId, CancellationToken ct = default)
    {
        var runs = await QueryRuns("""
            SELECT runs.* FROM pipelines.runs runs JOIN pipelines.steps steps ON steps.run_id = runs.id
            WHERE runs.workflow_name = @name AND steps.step_id = @step AND steps.key_material IS NOT NULL
              AND runs.started_at <= @before AND runs.id <> @exclude
            ORDER BY runs.started_at DESC, runs.id DESC LIMIT 1
            """, ct, ("name", workflowName), ("step", stepId), ("before", before.ToUniversalTime()), ("exclude", excludeRunId));
        if (runs.Count == 0)
        {
            return null;
        }
        var step = (await GetStepsAsync(runs[0].Id, ct)).First(s => s.StepId == stepId);
        return (runs[0], step);
    }

    public Task<bool> TransitionStepAsync(string runId, string stepId, IReadOnlyList<StepStatus> from, StepStatus to, string? error = null, CancellationToken ct = default) => With(async c =>
    {
        await using var cmd = Command(c, null, "UPDATE pipelines.steps SET status = @to, error = COALESCE(@error, error) WHERE run_id = @run AND step_id = @step AND status = ANY(@from)",
            ("to", to.ToString()), ("error", error), ("run", runId), ("step", stepId), ("from", from.Select(f => f.ToString()).ToArray()));
        return await cmd.ExecuteNonQueryAsync(ct) == 1;
    }, ct);

    public Task<bool> ClaimCheckpointAsync(string workflow, string trigger, string digest, string path, CancellationToken ct = default) => With(async c =>
    {
        await using var cmd = Command(c, null, "INSERT INTO pipelines.checkpoints (workflow, trigger_id, digest, path) VALUES (@w, @t, @d, @p) ON CONFLICT DO NOTHING",
            ("w", workflow), ("t", trigger), ("d", digest), ("p", path));
        return await cmd.ExecuteNonQueryAsync(ct) == 1;
    }, ct);

    public Task SetCheckpointRunAsync(string workflow, string trigger, string digest, string runId, CancellationToken ct = default) => With(async c =>
    {
        await Exec(c, null, "UPDATE pipelines.checkpoints SET run_id = @r WHERE workflow = @w AND trigger_id = @t AND digest = @d",
            ("r", runId), ("w", workflow), ("t", trigger), ("d", digest));
        return 0;
    }, ct);

    public Task<IReadOnlyList<CheckpointRecord>> ListCheckpointsAsync(string workflow, CancellationToken ct = default) => With<IReadOnlyList<CheckpointRecord>>(async c =>
    {
        var result = new List<CheckpointRecord>();
        await using var cmd = Command(c, null, "SELECT * FROM pipelines.checkpoints WHERE workflow = @w ORDER BY seen_at, path", ("w", workflow));
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
        {
            result.Add(new CheckpointRecord(Text(r, "workflow")!, Text(r, "trigger_id")!, Text(r, "digest")!, Text(r, "path")!, Text(r, "run_id"), Time(r, "seen_at")!.Value));
        }
        return result;
    }, ct);

    public Task<bool> TransitionRunAsync(string runId, RunStatus from, RunStatus to, DateTimeOffset? endedAt, string? error, CancellationToken ct = default) => With(async c =>
    {
        await using var cmd = Command(c, null, "UPDATE pipelines.runs SET status = @to, ended_at = @ended, error = @error WHERE id = @id AND status = @from",
            ("to", to.ToString()), ("ended", endedAt?.ToUniversalTime()), ("error", error), ("id", runId), ("from", from.ToString()));
        return await cmd.ExecuteNonQueryAsync(ct) == 1;
    }, ct);

    private Task<IReadOnlyList<RunRecord>> QueryRuns(string sql, CancellationToken ct, params (string, object?)[] args) => With<IReadOnlyList<RunRecord>>(async c =>
    {
        var result = new List<RunRecord>();
        await using var cmd = Command(c, null, sql, args);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        while (await r.ReadAsync(ct))
        {
            result.Add(new RunRecord(Text(r, "id")!, Text(r, "workflow_name")!, Text(r, "workflow_file")!, Text(r, "workflow_text")!,
                JsonSerializer.Deserialize<Dictionary<string, string>>(Text(r, "overrides")!)!, Text(r, "base_directory")!,
                JsonSerializer.Deserialize<List<string>>(Text(r, "allowed_roots")!)!, Enum.Parse<RunKind>(Text(r, "kind")!), Text(r, "origin_run"),
                Enum.Parse<RunStatus>(Text(r, "status")!), Time(r, "started_at")!.Value, Time(r, "ended_at"), Text(r, "error")));
        }
        return result;
    }, ct);

    private static string? Text(NpgsqlDataReader r, string column)
    {
        var i = r.GetOrdinal(column);
        return r.IsDBNull(i) ? null : r.GetValue(i).ToString();
    }

    private static DateTimeOffset? Time(NpgsqlDataReader r, string column)
    {
        var i = r.GetOrdinal(column);
        return r.IsDBNull(i) ? null : new DateTimeOffset(DateTime.SpecifyKind(r.GetDateTime(i), DateTimeKind.Utc));
    }

    public void Dispose() => _source.Dispose();
}
