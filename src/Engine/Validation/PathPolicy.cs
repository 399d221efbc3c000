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

    /// <summary>
    /// Resolves a path; returns null and sets <paramref name="error"/> when it escapes the roots, does not exist, or
    /// is not a regular file or directory. Every component is resolved (a link anywhere on the way counts, not only
    /// the last one), and messages name the path as written, never the absolute path or a link's target, so a server's
    /// answers reveal nothing of its file system.
    /// </summary>
    public string? Resolve(string raw, out string? error, bool mustExist = true)
    {
        error = null;
        if (raw.Length == 0)
        {
            error = "expected a path, got an empty string";
            return null;
        }
        if (raw.IndexOf('\0') >= 0 || raw.Any(char.IsControl))
        {
            error = "the path contains a control character";
            return null;
        }
        var shown = Definitions.WorkflowParser.Short(raw);
        var full = Path.GetFullPath(raw, BaseDirectory);
        var real = Common.SafeFiles.Resolve(full);
        if (real is null)
        {
            error = $"the path \"{shown}\" goes through a loop of symbolic links";
            return null;
        }
        if (!IsInside(full) || !IsInsideReal(real))
        {
            error = $"the path \"{shown}\" is outside the allowed roots (the working directory, the workflow's directory, " +
                    "--allow-root and PIPELINES_ALLOWED_ROOTS; links are followed)";
            return null;
        }
        if (!File.Exists(real) && !Directory.Exists(real))
        {
            if (mustExist)
            {
                error = $"expected an existing file or directory, but \"{shown}\" does not exist";
                return null;
            }
            return full;
        }
        if (Common.SafeFiles.IsSpecial(real))
        {
            error = $"\"{shown}\" is not a regular file or directory (a FIFO, socket or device); expected a file or directory";
            return null;
        }
        return full;
    }

    private IReadOnlyList<string>? _realRoots;

    /// <summary>The roots with their own links resolved (a root may itself sit behind a link, like /tmp on some systems).</summary>
    private IReadOnlyList<string> RealRoots => _realRoots ??= Roots.Select(r => Common.SafeFiles.Resolve(r) ?? r).Concat(Roots).Distinct().ToList();

    private bool IsInsideReal(string real) => RealRoots.Any(root => Within(real, root));

    private bool IsInside(string full) => Roots.Any(root => Within(full, root));

    private static bool Within(string full, string root) =>
        full.Equals(root, StringComparison.Ordinal) ||
        full.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal) ||
        root == "/";
}
