namespace Pipelines.Engine.Validation;

/// <summary>
/// Resolves paths in workflows and refuses any that escape the allowed roots (by <c>..</c>, an absolute path or a
/// symbolic link). Relative paths resolve against <see cref="BaseDirectory"/>, the directory the command runs in.
/// </summary>
public sealed class PathPolicy
{
    public PathPolicy(string baseDirectory, IEnumerable<string> roots)
    {
        BaseDirectory = Path.GetFullPath(baseDirectory);
        Roots = roots.Append(BaseDirectory).Select(r => Path.TrimEndingDirectorySeparator(Path.GetFullPath(r, BaseDirectory))).Distinct().ToList();
    }

    public string BaseDirectory { get; }
    public IReadOnlyList<string> Roots { get; }

    /// <summary>The default policy: the working directory, the workflow's directory and PIPELINES_ALLOWED_ROOTS.</summary>
    public static PathPolicy Default(string? workflowFile, IEnumerable<string>? extraRoots = null)
    {
        var roots = new List<string>(extraRoots ?? []);
        if (workflowFile is not null && File.Exists(workflowFile))
        {
            roots.Add(Path.GetDirectoryName(Path.GetFullPath(workflowFile))!);
        }
        if (Environment.GetEnvironmentVariable("PIPELINES_ALLOWED_ROOTS") is { Length: > 0 } env)
        {
            roots.AddRange(env.Split(':', StringSplitOptions.RemoveEmptyEntries));
        }
        return new PathPolicy(Directory.GetCurrentDirectory(), roots);
    }

    /// <summary>Resolves a path; returns null and sets <paramref name="error"/> when it escapes or does not exist.</summary>
    public string? Resolve(string raw, out string? error, bool mustExist = true)
    {
        error = null;
        if (raw.IndexOf('\0') >= 0)
        {
            error = "the path contains a NUL character";
            return null;
        }
        var full = Path.GetFullPath(raw, BaseDirectory);
        if (!IsInside(full))
        {
            error = $"the path \"{raw}\" resolves to {full}, outside the allowed roots ({string.Join(", ", Roots)}); " +
                    "add a root with --allow-root or PIPELINES_ALLOWED_ROOTS";
            return null;
        }
        FileSystemInfo info = Directory.Exists(full) ? new DirectoryInfo(full) : new FileInfo(full);
        if (!info.Exists)
        {
            if (mustExist)
            {
                error = $"expected an existing file or directory, but \"{raw}\" ({full}) does not exist";
                return null;
            }
            return full;
        }
        var target = info.LinkTarget is null ? null : info.ResolveLinkTarget(returnFinalTarget: true)?.FullName;
        if (target is not null && !IsInside(target))
        {
            error = $"the path \"{raw}\" is a link to {target}, outside the allowed roots";
            return null;
        }
        return full;
    }

    private bool IsInside(string full) => Roots.Any(root =>
        full.Equals(root, StringComparison.Ordinal) ||
        full.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal) ||
        root == "/");
}
