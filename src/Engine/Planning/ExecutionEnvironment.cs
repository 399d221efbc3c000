using System.Reflection;
using System.Runtime.InteropServices;
using System.Text.Json.Nodes;

namespace Pipelines.Engine.Planning;

/// <summary>
/// The environment fingerprint that enters every cache key: the engine's version and what changes numerics. Other
/// layers (the model runtime) add entries such as the TorchSharp version, dtype and device kind.
/// </summary>
public sealed class ExecutionEnvironment
{
    private readonly SortedDictionary<string, string> _entries = new(StringComparer.Ordinal);

    public ExecutionEnvironment()
    {
        var version = typeof(ExecutionEnvironment).Assembly.GetName().Version ?? new Version(0, 0);
        _entries["engine"] = $"{version.Major}.{version.Minor}";
        _entries["framework"] = $".NET {Environment.Version.Major}";
        _entries["arch"] = RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
    }

    /// <summary>Adds or replaces an entry, e.g. ("torch", "2.10.0").</summary>
    public ExecutionEnvironment Set(string name, string value)
    {
        _entries[name] = value;
        return this;
    }

    public JsonObject ToJson()
    {
        var obj = new JsonObject();
        foreach (var (k, v) in _entries)
        {
            obj[k] = v;
        }
        return obj;
    }

    /// <summary>
    /// Descriptive facts for manifests and lock files (not part of keys). <c>cpus</c> and <c>ompNumThreads</c> are
    /// there because libtorch's intra-op width (the cores, or OMP_NUM_THREADS) changes how reductions split, so a
    /// trained model matches another machine's to the bit only at the same width.
    /// </summary>
    public static JsonObject Describe()
    {
        var described = new JsonObject
        {
            ["host"] = Environment.MachineName,
            ["os"] = RuntimeInformation.OSDescription,
            ["runtime"] = RuntimeInformation.FrameworkDescription,
            ["pipelines"] = typeof(ExecutionEnvironment).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "unknown",
            ["cpus"] = Environment.ProcessorCount,
        };
        if (Environment.GetEnvironmentVariable("OMP_NUM_THREADS") is { Length: > 0 } omp)
        {
            described["ompNumThreads"] = omp;
        }
        return described;
    }
}
