using System.Globalization;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using Pipelines.Engine.Artifacts;

namespace Pipelines.Engine.Ledger;

/// <summary>The embedded ledger: one SQLite file (WAL mode), safe for several processes on one machine.</summary>
public sealed class SqliteRunLedger : IRunLedger
{
    private const int SchemaVersion = 2;
    private readonly string _connectionString;
    private readonly SemaphoreSlim _gate = new(1, 1);

    public SqliteRunLedger(string path)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        _connectionString = new SqliteConnectionStringBuilder { DataSource = path, Pooling = true, DefaultTimeout = 30 }.ToString();
        Migrate();
    }

    private SqliteConnection Open()
    {
        var connection = new SqliteConnection(_connectionString);
        connection.Open();
        using var pragma = connection.CreateCommand();
        pragma.CommandText = "PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;";
        pragma.ExecuteNonQuery();
        return connection;
    }

    private void Migrate()
    {
        using var c = Open();
        using var wal = c.CreateCommand();
        wal.CommandText = "PRAGMA journal_mode = WAL; PRAGMA user_version;";
        using var tx = c.BeginTransaction();
        var version = Scalar<long>(c, tx, "PRAGMA user_version");
        if (version < 1)
        {
            Exec(c, tx, """
                CREATE TABLE IF NOT EXISTS runs (
                    id TEXT PRIMARY KEY, workflow_name TEXT NOT NULL, workflow_file TEXT NOT NULL, workflow_text TEXT NOT NULL,
                    overrides TEXT NOT NULL, base_directory TEXT NOT NULL, allowed_roots TEXT NOT NULL,
                    kind TEXT NOT NULL, origin_run TEXT, status TEXT NOT NULL,
                    started_at TEXT NOT NULL, ended_at TEXT, error TEXT);
                CREATE INDEX IF NOT EXISTS runs_by_name ON runs(workflow_name, started_at);
                CREATE TABLE IF NOT EXISTS steps (
                    run_id TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE, step_id TEXT NOT NULL,
                    activity TEXT NOT NULL, activity_version INTEGER NOT NULL, status TEXT NOT NULL,
                    cache_key TEXT, key_material TEXT, started_at TEXT, ended_at TEXT, duration_ms REAL, error TEXT,
                    outputs TEXT, cached_from TEXT, PRIMARY KEY (run_id, step_id));
                """);
        }
        if (version < 2)
        {
            Exec(c, tx, """
                CREATE TABLE IF NOT EXISTS checkpoints (
                    workflow TEXT NOT NULL, trigger_id TEXT NOT NULL, digest TEXT NOT NULL, path TEXT NOT NULL, run_id TEXT,
                    seen_at TEXT NOT NULL, PRIMARY KEY (workflow, trigger_id, digest));
                """);
            Exec(c, tx, $"PRAGMA user_version = {SchemaVersion}");
        }
        tx.Commit();
        wal.ExecuteNonQuery();
    }

    public async Task CreateRunAsync(RunRecord run, CancellationToken ct = default)
    {
        await WithConnection(c => Exec(c, null, """
            INSERT INTO runs (id, workflow_name, workflow_file, workflow_text, overrides, base_directory, allowed_roots, kind, origin_run, status, started_at, ended_at, error)
            VALUES ($id, $name, $file, $text, $overrides, $base, $roots, $kind, $origin, $status, $started, $ended, $error)
            ON CONFLICT(id) DO UPDATE SET status = excluded.status, ended_at = NULL, error = NULL
            """,
            ("$id", run.Id), ("$name", run.WorkflowName), ("$file", run.WorkflowFile), ("$text", run.WorkflowText),
            ("$overrides", JsonSerializer.Serialize(run.Overrides)), ("$base", run.BaseDirectory),
            ("$roots", JsonSerializer.Serialize(run.AllowedRoots)), ("$kind", run.Kind.ToString()), ("$origin", run.OriginRunId),
            ("$status", run.Status.ToString()), ("$started", Time(run.StartedAt)), ("$ended", Time(run.EndedAt)), ("$error", run.Error)), ct);
    }

    public Task UpdateRunAsync(string runId, RunStatus status, DateTimeOffset? endedAt, string? error, CancellationToken ct = default) =>
        WithConnection(c => Exec(c, null, "UPDATE runs SET status = $status, ended_at = $ended, error = $error WHERE id = $id",
            ("$id", runId), ("$status", status.ToString()), ("$ended", Time(endedAt)), ("$error", error)), ct);

    public Task UpsertStepAsync(StepRecord s, CancellationToken ct = default) => UpsertStepsAsync([s], ct);

    public Task UpsertStepsAsync(IReadOnlyList<StepRecord> steps, CancellationToken ct = default) =>
        WithConnection(c =>
        {
            using var tx = c.BeginTransaction();
            foreach (var s in steps)
            {
                UpsertStep(c, tx, s);
            }
            tx.Commit();
        }, ct);

    private static void UpsertStep(SqliteConnection c, SqliteTransaction tx, StepRecord s) =>
        Exec(c, tx, """
            INSERT INTO steps (run_id, step_id, activity, activity_version, status, cache_key, key_material, started_at, ended_at, duration_ms, error, outputs, cached_from)
            VALUES ($run, $step, $activity, $version, $status, $key, $material, $started, $ended, $duration, $error, $outputs, $from)
            ON CONFLICT(run_id, step_id) DO UPDATE SET activity = excluded.activity, activity_version = excluded.activity_version,
                status = excluded.status, cache_key = excluded.cache_key, key_material = excluded.key_material,
                started_at = excluded.started_at, ended_at = excluded.ended_at, duration_ms = excluded.duration_ms,
                error = excluded.error, outputs = excluded.outputs, cached_from = excluded.cached_from
            """,
            ("$run", s.RunId), ("$step", s.StepId), ("$activity", s.Activity), ("$version", s.ActivityVersion),
            ("$status", s.Status.ToString()), ("$key", s.CacheKey), ("$material", s.KeyMaterial), ("$started", Time(s.StartedAt)),
            ("$ended", Time(s.EndedAt)), ("$duration", s.DurationMs), ("$error", s.Error),
            ("$outputs", s.Outputs is null ? null : JsonSerializer.Serialize(s.Outputs, ArtifactStore.Json)), ("$from", s.CachedFromRunId));

    public async Task<RunRecord?> GetRunAsync(string runId, CancellationToken ct = default)
    {
        var runs = await QueryRuns("SELECT * FROM runs WHERE id = $id", ct, ("$id", runId));
        return runs.FirstOrDefault();
    }

    public Task<IReadOnlyList<RunRecord>> ListRunsAsync(int limit, CancellationToken ct = default) =>
        QueryRuns("SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT $limit", ct, ("$limit", limit));

    public async Task<IReadOnlyList<StepRecord>> GetStepsAsync(string runId, CancellationToken ct = default)
    {
        var result = new List<StepRecord>();
        await WithConnection(c =>
        {
            using var cmd = Command(c, null, "SELECT * FROM steps WHERE run_id = $run ORDER BY rowid", ("$run", runId));
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                result.Add(ReadStep(r));
            }
        }, ct);
        return result;
    }

    public async Task<(RunRecord Run, StepRecord Step)?> FindPreviousStepAsync(string workflowName, string stepId, DateTimeOffset before, string excludeRunId, CancellationToken ct = default)
    {
        var runs = await QueryRuns("""
            SELECT runs.* FROM runs JOIN steps ON steps.run_id = runs.id
            WHERE runs.workflow_name = $name AND steps.step_id = $step AND steps.key_material IS NOT NULL
              AND runs.started_at <= $before AND runs.id <> $exclude
            ORDER BY runs.started_at DESC, runs.id DESC LIMIT 1
            """, ct, ("$name", workflowName), ("$step", stepId), ("$before", Time(before)), ("$exclude", excludeRunId));
        if (runs.Count == 0)
        {
            return null;
        }
        var step = (await GetStepsAsync(runs[0].Id, ct)).First(s => s.StepId == stepId);
        return (runs[0], step);
    }

    public async Task<bool> TransitionStepAsync(string runId, string stepId, IReadOnlyList<StepStatus> from, StepStatus to, string? error = null, CancellationToken ct = default)
    {
        var changed = 0;
        var list = string.Join(", ", from.Select(f => $"'{f}'"));
        await WithConnection(c =>
        {
            using var cmd = Command(c, null, $"UPDATE steps SET status = $to, error = COALESCE($error, error) WHERE run_id = $run AND step_id = $step AND status IN ({list})",
                ("$to", to.ToString()), ("$error", error), ("$run", runId), ("$step", stepId));
            changed = cmd.ExecuteNonQuery();
        }, ct);
        return changed == 1;
    }

    public async Task<bool> ClaimCheckpointAsync(string workflow, string trigger, string digest, string path, CancellationToken ct = default)
    {
        var changed = 0;
        await WithConnection(c =>
        {
            using var cmd = Command(c, null, "INSERT INTO checkpoints (workflow, trigger_id, digest, path, seen_at) VALUES ($w, $t, $d, $p, $at) ON CONFLICT DO NOTHING",
                ("$w", workflow), ("$t", trigger), ("$d", digest), ("$p", path), ("$at", Time(DateTimeOffset.UtcNow)));
            changed = cmd.ExecuteNonQuery();
        }, ct);
        return changed == 1;
    }

    public Task SetCheckpointRunAsync(string workflow, string trigger, string digest, string runId, CancellationToken ct = default) =>
        WithConnection(c => Exec(c, null, "UPDATE checkpoints SET run_id = $r WHERE workflow = $w AND trigger_id = $t AND digest = $d",
            ("$r", runId), ("$w", workflow), ("$t", trigger), ("$d", digest)), ct);

    public async Task<IReadOnlyList<CheckpointRecord>> ListCheckpointsAsync(string workflow, CancellationToken ct = default)
    {
        var result = new List<CheckpointRecord>();
        await WithConnection(c =>
        {
            using var cmd = Command(c, null, "SELECT * FROM checkpoints WHERE workflow = $w ORDER BY seen_at, path", ("$w", workflow));
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                result.Add(new CheckpointRecord(r.GetString(0), r.GetString(1), r.GetString(2), r.GetString(3), NullableString(r, "run_id"), ParseTime(r.GetString(5))!.Value));
            }
        }, ct);
        return result;
    }

    public async Task<bool> TransitionRunAsync(string runId, RunStatus from, RunStatus to, DateTimeOffset? endedAt, string? error, CancellationToken ct = default)
    {
        var changed = 0;
        await WithConnection(c =>
        {
            using var cmd = Command(c, null, "UPDATE runs SET status = $to, ended_at = $ended, error = $error WHERE id = $id AND status = $from",
                ("$to", to.ToString()), ("$ended", Time(endedAt)), ("$error", error), ("$id", runId), ("$from", from.ToString()));
            changed = cmd.ExecuteNonQuery();
        }, ct);
        return changed == 1;
    }

    private async Task<IReadOnlyList<RunRecord>> QueryRuns(string sql, CancellationToken ct, params (string, object?)[] args)
    {
        var result = new List<RunRecord>();
        await WithConnection(c =>
        {
            using var cmd = Command(c, null, sql, args);
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                result.Add(new RunRecord(
                    r.GetString(r.GetOrdinal("id")),
                    r.GetString(r.GetOrdinal("workflow_name")),
                    r.GetString(r.GetOrdinal("workflow_file")),
                    r.GetString(r.GetOrdinal("workflow_text")),
                    JsonSerializer.Deserialize<Dictionary<string, string>>(r.GetString(r.GetOrdinal("overrides")))!,
                    r.GetString(r.GetOrdinal("base_directory")),
                    JsonSerializer.Deserialize<List<string>>(r.GetString(r.GetOrdinal("allowed_roots")))!,
                    Enum.Parse<RunKind>(r.GetString(r.GetOrdinal("kind"))),
                    NullableString(r, "origin_run"),
                    Enum.Parse<RunStatus>(r.GetString(r.GetOrdinal("status"))),
                    ParseTime(r.GetString(r.GetOrdinal("started_at")))!.Value,
                    ParseTime(NullableString(r, "ended_at")),
                    NullableString(r, "error")));
            }
        }, ct);
        return result;
    }

    private static StepRecord ReadStep(SqliteDataReader r)
    {
        var outputs = NullableString(r, "outputs");
        return new StepRecord(
            r.GetString(r.GetOrdinal("run_id")),
            r.GetString(r.GetOrdinal("step_id")),
            r.GetString(r.GetOrdinal("activity")),
            r.GetInt32(r.GetOrdinal("activity_version")),
            Enum.Parse<StepStatus>(r.GetString(r.GetOrdinal("status"))),
            NullableString(r, "cache_key"),
            NullableString(r, "key_material"),
            ParseTime(NullableString(r, "started_at")),
            ParseTime(NullableString(r, "ended_at")),
            r.IsDBNull(r.GetOrdinal("duration_ms")) ? null : r.GetDouble(r.GetOrdinal("duration_ms")),
            NullableString(r, "error"),
            outputs is null ? null : JsonSerializer.Deserialize<Dictionary<string, OutputRecord>>(outputs, ArtifactStore.Json),
            NullableString(r, "cached_from"));
    }

    private async Task WithConnection(Action<SqliteConnection> action, CancellationToken ct)
    {
        await _gate.WaitAsync(CancellationToken.None);
        try
        {
            using var c = Open();
            action(c);
        }
        finally
        {
            _gate.Release();
        }
    }

    private static SqliteCommand Command(SqliteConnection c, SqliteTransaction? tx, string sql, params (string Name, object? Value)[] args)
    {
        var cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        foreach (var (name, value) in args)
        {
            cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
        }
        return cmd;
    }

    private static void Exec(SqliteConnection c, SqliteTransaction? tx, string sql, params (string, object?)[] args)
    {
        using var cmd = Command(c, tx, sql, args);
        cmd.ExecuteNonQuery();
    }

    private static T Scalar<T>(SqliteConnection c, SqliteTransaction? tx, string sql)
    {
        using var cmd = Command(c, tx, sql);
        return (T)Convert.ChangeType(cmd.ExecuteScalar()!, typeof(T), CultureInfo.InvariantCulture);
    }

    private static string? NullableString(SqliteDataReader r, string column)
    {
        var i = r.GetOrdinal(column);
        return r.IsDBNull(i) ? null : r.GetString(i);
    }

    private static string? Time(DateTimeOffset? t) => t?.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture);

    private static DateTimeOffset? ParseTime(string? s) => s is null ? null : DateTimeOffset.Parse(s, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal);

    public void Dispose()
    {
        _gate.Dispose();
        SqliteConnection.ClearAllPools();
    }
}
