using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using Npgsql;

namespace Pipelines.IntegrationTests;

/// <summary>
/// A real PostgreSQL server from Debian's packages, in a temp directory on a free port (research/environment.md):
/// initdb and pg_ctl run as the postgres user when the tests run as root. Each test takes its own database.
/// </summary>
public sealed class PostgresServer : IDisposable
{
    private readonly string _bin;
    private readonly string _dir;
    private readonly bool _asPostgres;

    public PostgresServer()
    {
        _bin = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).Where(d => File.Exists(Path.Combine(d, "initdb"))).OrderDescending().FirstOrDefault()
              ?? throw new InvalidOperationException("no initdb under /usr/lib/postgresql/*/bin: install Debian's postgresql package (scripts/test.sh does)")
            : throw new InvalidOperationException("PostgreSQL is not installed: install Debian's postgresql package (scripts/test.sh does)");
        _dir = Path.Combine(Path.GetTempPath(), "pipelines-pg-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(_dir);
        _asPostgres = Environment.UserName == "root";
        if (_asPostgres)
        {
            Run("chown", "postgres", _dir);
        }
        Port = FreePort();
        Pg("initdb", "-D", Data, "-A", "trust", "-U", "pipelines", "--no-sync");
        Start();
    }

    public int Port { get; }
    private string Data => Path.Combine(_dir, "data");

    public string ConnectionString(string database = "postgres") =>
        $"Host=127.0.0.1;Port={Port};Username=pipelines;Database={database};Pooling=true;Timeout=5;Command Timeout=30";

    /// <summary>A fresh, empty database for one test.</summary>
    public string CreateDatabase()
    {
        var name = "t_" + Guid.NewGuid().ToString("N")[..12];
        using var c = new NpgsqlConnection(ConnectionString());
        c.Open();
        using var cmd = new NpgsqlCommand($"CREATE DATABASE {name}", c);
        cmd.ExecuteNonQuery();
        return ConnectionString(name);
    }

    public void Start() => Pg("pg_ctl", "-D", Data, "-w", "-l", Path.Combine(_dir, "log"), "-o", $"-p {Port} -k {_dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start");

    public void Stop() => Pg("pg_ctl", "-D", Data, "-w", "-m", "fast", "stop");

    private void Pg(string tool, params string[] args)
    {
        var path = Path.Combine(_bin, tool);
        if (_asPostgres)
        {
            Run("runuser", ["-u", "postgres", "--", path, .. args]);
        }
        else
        {
            Run(path, args);
        }
    }

    private static void Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args)
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        p.WaitForExit();
        if (p.ExitCode != 0)
        {
            throw new InvalidOperationException($"{file} {string.Join(' ', args)} failed ({p.ExitCode}): {stdout.Result}{stderr.Result}");
        }
    }

    public static int FreePort()
    {
        var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        var port = ((IPEndPoint)l.LocalEndpoint).Port;
        l.Stop();
        return port;
    }

    public void Dispose()
    {
        try
        {
            Stop();
        }
        catch (InvalidOperationException)
        {
        }
        NpgsqlConnection.ClearAllPools();
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
