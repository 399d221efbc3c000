// What kind of file a path names, without opening it: opening a FIFO blocks until a writer appears (and ignores
// SIGTERM while it waits), so every reader of user-named files asks here first. Compiled into Pipelines.Engine
// (public) and Pipelines.Models (internal, with PIPELINES_RUNTIME), which must not depend on each other.
using System.Runtime.InteropServices;

#if PIPELINES_RUNTIME
namespace Pipelines.Models.Common; // a distinct name: tools that index both assemblies' docs must not see one type twice
#else
namespace Pipelines.Common;
#endif

/// <summary>Checks that a path is a regular file (or directory) before anything opens it.</summary>
#if PIPELINES_RUNTIME
internal
#else
public
#endif
static partial class SafeFiles
{
    private const int AtFdCwd = -100;
    private const uint StatxType = 0x1;
    private const int ModeOffset = 28; // struct statx: mask, blksize (u32), attributes (u64), nlink, uid, gid (u32), mode (u16)
    private const int IfMt = 0xF000, IfReg = 0x8000, IfDir = 0x4000;

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Statx(int dirfd, string path, int flags, uint mask, byte[] buffer);

    /// <summary>The file type bits (S_IFMT) of what the path names after following links; null when unknown.</summary>
    private static int? TypeBits(string path)
    {
        if (!OperatingSystem.IsLinux())
        {
            return null;
        }
        try
        {
            var buffer = new byte[256];
            return Statx(AtFdCwd, path, 0, StatxType, buffer) == 0 ? BitConverter.ToUInt16(buffer, ModeOffset) & IfMt : null;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            return null;
        }
    }

    /// <summary>True when the path exists and is a regular file (links followed): not a FIFO, socket or device.</summary>
    public static bool IsRegularFile(string path) =>
        TypeBits(path) is { } bits ? bits == IfReg : File.Exists(path);

    /// <summary>True when the path exists and is a directory (links followed).</summary>
    public static bool IsDirectory(string path) =>
        TypeBits(path) is { } bits ? bits == IfDir : Directory.Exists(path);

    /// <summary>True when the path exists but is neither a regular file nor a directory (a FIFO, socket or device).</summary>
    public static bool IsSpecial(string path) =>
        TypeBits(path) is { } bits && bits != IfReg && bits != IfDir;

    /// <summary>
    /// The path with every symbolic link resolved, component by component (what realpath(3) gives); a link loop or
    /// a chain of more than 40 links gives null. Components that do not exist are kept as written.
    /// </summary>
    public static string? Resolve(string fullPath)
    {
        var pending = new Stack<string>(fullPath.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse());
        var result = "/";
        var hops = 0;
        while (pending.Count > 0)
        {
            var part = pending.Pop();
            if (part == ".")
            {
                continue;
            }
            if (part == "..")
            {
                result = Path.GetDirectoryName(result) ?? "/";
                continue;
            }
            var candidate = Path.Join(result, part);
            string? target = null;
            try
            {
                target = new FileInfo(candidate).LinkTarget;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
            }
            if (target is null)
            {
                result = candidate;
                continue;
            }
            if (++hops > 40)
            {
                return null;
            }
            if (target.StartsWith('/'))
            {
                result = "/";
            }
            foreach (var p in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse())
            {
                pending.Push(p);
            }
        }
        return result;
    }
}
