using System.Security.Cryptography;
using System.Text;

namespace Pipelines.Engine.Artifacts;

/// <summary>SHA-256 digests of files and directory trees.</summary>
public static class Hashing
{
    public static string File(string path)
    {
        if (!Common.SafeFiles.IsRegularFile(path))
        {
            // Reading a FIFO would block forever; a device would never end.
            throw new IOException($"{Path.GetFileName(path)}: not a regular file (a FIFO, socket or device); expected a file");
        }
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    /// <summary>
    /// A directory's digest: SHA-256 over lines "digest  relative/path\n" for every file, sorted by path (ordinal),
    /// so it depends on names and contents only, never on timestamps or enumeration order.
    /// </summary>
    public static (string Digest, long Size, List<TreeFile> Files) Directory(string root)
    {
        var files = System.IO.Directory.EnumerateFiles(root, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(root, f).Replace('\\', '/'))
            .Order(StringComparer.Ordinal)
            .Select(rel => new TreeFile(rel, File(Path.Combine(root, rel)), new FileInfo(Path.Combine(root, rel)).Length))
            .ToList();
        var listing = new StringBuilder();
        foreach (var f in files)
        {
            listing.Append(f.Digest).Append("  ").Append(f.Path).Append('\n');
        }
        var digest = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(listing.ToString())));
        return (digest, files.Sum(f => f.Size), files);
    }

    /// <summary>Digest of a file or directory, whichever the path is.</summary>
    public static string Any(string path) => System.IO.Directory.Exists(path) ? Directory(path).Digest : File(path);

    /// <summary>The short form shown in tables: the first 12 hex digits.</summary>
    /// <summary>True for a lower-case hex SHA-256 (64 characters): a digest or a cache key, safe as a file name.</summary>
    public static bool IsDigest(string text) => text.Length == 64 && text.All(c => c is >= '0' and <= '9' or >= 'a' and <= 'f');

    public static string Short(string digest) => digest.Length > 12 ? digest[..12] : digest;
}
