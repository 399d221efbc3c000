using Hangfire;
using Hangfire.InMemory;
using Hangfire.PostgreSql;
using Microsoft.Extensions.DependencyInjection;
using Pipelines.Activities;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;
using Pipelines.Engine.Running;

namespace Pipelines.Host.Server;

/// <summary>The services the server and the workers share: store, ledger, runner, scheduler and Hangfire.</summary>
public static class ServerServices
{
    public static IServiceCollection AddPipelinesServer(this IServiceCollection services, ServerConfig config)
    {
        services.AddSingleton(config);
        services.AddPipelinesActivities();
        services.AddSingleton(_ => new ArtifactStore(config.Store));
        services.AddSingleton<IRunLedger>(_ => config.IsEmbedded
            ? new SqliteRunLedger(Path.Combine(config.Store, "ledger.db"))
            : new PostgresRunLedger(config.Database!));
        services.AddSingleton(sp => new InProcessRunner(sp.GetRequiredService<ArtifactStore>(), sp.GetRequiredService<IRunLedger>(),
            sp.GetRequiredService<ExecutionEnvironment>(), sp));
        services.AddSingleton(sp => new WorkflowCompiler(sp.GetRequiredService<ActivityRegistry>()));
        services.AddSingleton<RunScheduler>();
        services.AddSingleton<RunEvents>();
        services.AddTransient<StepJob>();
        services.AddTransient<CheckpointWatcher>();
        services.AddHangfire(c =>
        {
            c.SetDataCompatibilityLevel(CompatibilityLevel.Version_180).UseSimpleAssemblyNameTypeSerializer().UseRecommendedSerializerSettings();
            if (config.IsEmbedded)
            {
                c.UseInMemoryStorage(new InMemoryStorageOptions());
            }
            else
            {
                c.UsePostgreSqlStorage(o => o.UseNpgsqlConnection(config.Database), new PostgreSqlStorageOptions
                {
                    SchemaName = "hangfire",
                    PrepareSchemaIfNecessary = true,
                    // A killed worker's step becomes visible again after this; live workers keep theirs by heartbeat.
                    UseSlidingInvisibilityTimeout = true,
                    InvisibilityTimeout = config.InvisibilityTimeout,
                    QueuePollInterval = TimeSpan.FromMilliseconds(500),
                    DistributedLockTimeout = TimeSpan.FromMinutes(1),
                });
            }
        });
        if (config.Queues.Count > 0 && config.WorkerCount > 0)
        {
            services.AddHangfireServer(o =>
            {
                // Hangfire.PostgreSql fetches queues in alphabetical order; "gpu" before "default" is deliberate nowhere here.
                o.Queues = config.Queues.ToArray();
                o.WorkerCount = config.WorkerCount;
                o.ServerName = $"{Environment.MachineName}:{Environment.ProcessId}";
                o.CancellationCheckInterval = TimeSpan.FromSeconds(1);
                o.SchedulePollingInterval = TimeSpan.FromSeconds(1);
            });
        }
        return services;
    }
}
