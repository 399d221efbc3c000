using Hangfire.Common;

namespace Pipelines.Host.Server;

/// <summary>How Hangfire's dashboard names our jobs: a step of a run, or a checkpoint watcher of a workflow's trigger.</summary>
public static class JobNames
{
    public static string Display(Job job) => job.Type == typeof(CheckpointWatcher) && job.Args.Count >= 2
        ? $"watcher: workflows/{job.Args[0]}.json, trigger {job.Args[1]}"
        : job.Type == typeof(StepJob) && job.Args.Count >= 2 ? $"run {job.Args[0]} / step {job.Args[1]}" : job.Method.Name;
}
