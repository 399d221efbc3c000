namespace Pipelines.Host.Cli;

/// <summary>The CLI's exit codes.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    /// <summary>A run failed or was cancelled, or reproduce found a mismatch.</summary>
    public const int Failed = 1;
    /// <summary>Invalid input: a bad workflow, parameter, path, run id or command line.</summary>
    public const int Invalid = 2;
}
