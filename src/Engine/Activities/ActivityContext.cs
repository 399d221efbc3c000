namespace Pipelines.Engine.Activities;

/// <summary>Progress of a running step: a fraction in [0, 1] (or null when unknown) and a short message.</summary>
public sealed record StepProgress(double? Fraction, string? Message);

/// <summary>What an executing activity may use: its scratch outputs, progress, logging, cancellation and services.</summary>
public sealed class ActivityContext
{
    private readonly Dictionary<string, string> _outputs = new(StringComparer.Ordinal);

    public required string RunId { get; init; }
    public required string StepId { get; init; }
    public required ActivityDescriptor Descriptor { get; init; }
    /// <summary>A private scratch directory, deleted after the step.</summary>
    public required string WorkDirectory { get; init; }

    /// <summary>
    /// A durable scratch directory tied to this step's cache key (<c>resume/{key}</c> in the store): it survives a
    /// kill, a crash and a failed attempt, and is removed once the step completes. A long activity saves its state
    /// here every so often and, when it finds a save, continues from it instead of starting over. Only the same
    /// inputs (the same key) ever see a save, so a resumed step computes what an uninterrupted one would.
    /// </summary>
    public string ResumeDirectory => _resume ??= ResumeFactory?.Invoke() ?? Directory.CreateDirectory(Path.Combine(WorkDirectory, "resume")).FullName;

    private string? _resume;

    /// <summary>Creates <see cref="ResumeDirectory"/> on first use (set by the executor).</summary>
    public Func<string>? ResumeFactory { get; init; }
    public CancellationToken CancellationToken { get; init; }
    public IServiceProvider? Services { get; init; }
    public Action<StepProgress>? OnProgress { get; init; }
    public Action<string>? OnLog { get; init; }

    /// <summary>The path to write a file output to.</summary>
    public string OutputFile(string port)
    {
        var output = Descriptor.Output(port) ?? throw new ArgumentException($"activity {Descriptor.Type} has no output \"{port}\"");
        if (output.IsDirectory)
        {
            throw new ArgumentException($"output \"{port}\" is a directory; use {nameof(OutputDirectory)}");
        }
        var dir = Path.Combine(WorkDirectory, "out", port);
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, string.IsNullOrEmpty(output.FileName) ? port : output.FileName);
        _outputs[port] = path;
        return path;
    }

    /// <summary>The directory to write a directory output (such as a checkpoint) into.</summary>
    public string OutputDirectory(string port)
    {
        var output = Descriptor.Output(port) ?? throw new ArgumentException($"activity {Descriptor.Type} has no output \"{port}\"");
        if (!output.IsDirectory)
        {
            throw new ArgumentException($"output \"{port}\" is a file; use {nameof(OutputFile)}");
        }
        var dir = Path.Combine(WorkDirectory, "out", port, "dir");
        Directory.CreateDirectory(dir);
        _outputs[port] = dir;
        return dir;
    }

    /// <summary>Reports progress; cheap enough to call per item.</summary>
    public void Report(double? fraction, string? message = null) => OnProgress?.Invoke(new StepProgress(fraction, message));

    public void Log(string message) => OnLog?.Invoke(message);

    /// <summary>Output paths requested so far, by port.</summary>
    public IReadOnlyDictionary<string, string> WrittenOutputs => _outputs;
}
