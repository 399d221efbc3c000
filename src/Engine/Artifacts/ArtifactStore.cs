using System.Text.Json;
using System.Text.Json.Serialization;

namespace Pipelines.Engine.Artifacts;

/// <summary>
/// The content-addressed store on a local (or shared) directory:
/// <c>objects/sha256/ab/abcdef…</c> (file or directory) with <c>….json</c> manifests, <c>cache/ab/KEY.json</c>
/// entries mapping cache keys to outputs, <c>locks/</c> for claims, <c>runs/RUN/</c> for lock files and results.
/// Objects are immutable and verified on read.
/// </summary>
public sealed class ArtifactStore
{
    internal static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    public ArtifactStore(string root)
    {
        Root = Path.GetFullPath(root);
        Directory.CreateDirectory(ObjectsDirectory);
        Directory.CreateDirectory(CacheDirectory);
        Directory.CreateDirectory(LocksDirectory);
        Directory.CreateDirectory(RunsDirectory);
        Directory.CreateDirectory(TempDirectory);
    }

    public string Root { get; }
    public string ObjectsDirectory => Path.Combine(Root, "objects", "sha256");
    public string CacheDirectory => Path.Combine(Root, "cache");
    public string LocksDirectory => Path.Combine(Root, "locks");
    public string RunsDirectory => Path.Combine(Root, "runs");
    public string TempDirectory => Path.Combine(Root, "tmp");
    /// <summary>Durable per-key scratch (<c>resume/{key}</c>): kept across kills and failures, removed when the step completes.</summary>
    public string ResumeDirectory => Path.Combine(Root, "resume");

    /// <summary>
    /// The durable scratch directory of a cache key, created on demand. A step killed or failed part-way finds its
    /// saved state here when it runs again with the same key; a different key (other inputs) never sees it.
    /// </summary>
    public string ResumeDirectoryFor(string key)
    {
        if (!Hashing.IsDigest(key))
        {
            throw new ArgumentException("not a cache key", nameof(key));
        }
        var dir = Path.Combine(ResumeDirectory, key);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>Removes a key's durable scratch once its step has completed (its outputs are in the store).</summary>
    public void DeleteResumeDirectory(string key)
    {
        var dir = Path.Combine(ResumeDirectory, key);
        try
        {
            if (Hashing.IsDigest(key) && Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    public string ObjectPath(string digest) => Path.Combine(ObjectsDirectory, digest[..2], digest);

    private string ManifestPath(string digest) => ObjectPath(digest) + ".json";

    private string CachePath(string key) => Path.Combine(CacheDirectory, key[..2], key + ".json");

    public bool Contains(string digest) => File.Exists(ObjectPath(digest)) || Directory.Exists(ObjectPath(digest));

    /// <summary>A new private scratch directory under the store (same file system, so ingesting is a rename).</summary>
    public string CreateScratch(string label)
    {
        var dir = Path.Combine(TempDirectory, $"{label}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>
    /// Moves a produced file or directory into the store under its digest and writes its manifest. If the object
    /// already exists (same content), the produced copy is discarded.
    /// </summary>
    public ObjectManifest Ingest(string producedPath, Func<string, long, List<TreeFile>?, ObjectManifest> manifest)
    {
        var isDirectory = Directory.Exists(producedPath);
        string digest;
        long size;
        List<TreeFile>? files = null;
        if (isDirectory)
        {
            (digest, size, files) = Hashing.Directory(producedPath);
        }
        else
        {
            digest = Hashing.File(producedPath);
            size = new FileInfo(producedPath).Length;
        }
        var target = ObjectPath(digest);
        Directory.CreateDirectory(Path.GetDirectoryName(target)!);
        if (!Contains(digest))
        {
            if (isDirectory)
            {
                Directory.Move(producedPath, target);
            }
            else
            {
                File.Move(producedPath, target);
                if (!OperatingSystem.IsWindows())
                {
                    File.SetUnixFileMode(target, UnixFileMode.UserRead | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
                }
            }
        }
        var record = manifest(digest, size, files);
        if (!File.Exists(ManifestPath(digest)))
        {
            WriteAtomic(ManifestPath(digest), JsonSerializer.Serialize(record, Json));
        }
        return record;
    }

    public ObjectManifest? ReadManifest(string digest)
    {
        var path = ManifestPath(digest);
        if (!File.Exists(path))
        {
            return null;
        }
        try
        {
            return JsonSerializer.Deserialize<ObjectManifest>(File.ReadAllText(path), Json);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>Re-hashes an object; returns null when intact, else what is wrong with it.</summary>
    public string? Verify(string digest)
    {
        var path = ObjectPath(digest);
        try
        {
            if (Directory.Exists(path))
            {
                var actual = Hashing.Directory(path).Digest;
                return actual == digest ? null : $"directory object {Hashing.Short(digest)} hashes to {Hashing.Short(actual)}: its content was changed";
            }
            if (File.Exists(path))
            {
                var actual = Hashing.File(path);
                return actual == digest ? null : $"object {Hashing.Short(digest)} hashes to {Hashing.Short(actual)}: its content was changed";
            }
            return $"object {Hashing.Short(digest)} is missing from the store";
        }
        catch (IOException e)
        {
            return $"object {Hashing.Short(digest)} cannot be read: {e.Message}";
        }
    }

    /// <summary>Removes an object (used when it is found corrupted, and by garbage collection).</summary>
    public void Delete(string digest)
    {
        var path = ObjectPath(digest);
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
        else if (File.Exists(path))
        {
            File.Delete(path);
        }
        if (File.Exists(ManifestPath(digest)))
        {
            File.Delete(ManifestPath(digest));
        }
    }

    public CacheEntry? TryGetCacheEntry(string key)
    {
        var path = CachePath(key);
        if (!File.Exists(path))
        {
            return null;
        }
        try
        {
            return JsonSerializer.Deserialize<CacheEntry>(File.ReadAllText(path), Json);
        }
        catch (JsonException)
        {
            File.Delete(path);
            return null;
        }
    }

    public void PutCacheEntry(CacheEntry entry)
    {
        var path = CachePath(entry.Key);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        WriteAtomic(path, JsonSerializer.Serialize(entry, Json));
    }

    public void RemoveCacheEntry(string key)
    {
        var path = CachePath(key);
        if (File.Exists(path))
        {
            File.Delete(path);
        }
    }

    public IEnumerable<CacheEntry> CacheEntries() =>
        Directory.EnumerateFiles(CacheDirectory, "*.json", SearchOption.AllDirectories)
            .Select(f => TryGetCacheEntry(Path.GetFileNameWithoutExtension(f)))
            .OfType<CacheEntry>();

    /// <summary>Every object digest in the store.</summary>
    public IEnumerable<string> ObjectDigests() =>
        Directory.EnumerateDirectories(ObjectsDirectory)
            .SelectMany(d => Directory.EnumerateFileSystemEntries(d))
            .Select(Path.GetFileName)
            .OfType<string>()
            .Where(n => n.Length == 64 && !n.EndsWith(".json", StringComparison.Ordinal));

    /// <summary>
    /// Claims a cache key for computing: an exclusive OS lock on <c>locks/KEY.lock</c>, released on dispose or
    /// when the process dies. Returns null when another process or thread holds it.
    /// </summary>
    public IDisposable? TryClaim(string key)
    {
        try
        {
            var stream = new FileStream(Path.Combine(LocksDirectory, key + ".lock"), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            return stream;
        }
        catch (IOException)
        {
            return null;
        }
    }

    /// <summary>Writes text to a temporary file and renames it into place, so readers never see half a file.</summary>
    public static void WriteAtomic(string path, string text)
    {
        var tmp = path + "." + Guid.NewGuid().ToString("N")[..8] + ".tmp";
        File.WriteAllText(tmp, text);
        File.Move(tmp, path, overwrite: true);
    }
}
