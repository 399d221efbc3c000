using Microsoft.Extensions.DependencyInjection;
using Pipelines.Activities.Data;
using Pipelines.Activities.Reports;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Planning;

namespace Pipelines.Activities;

/// <summary>Registers every product activity, the registry and the environment fingerprint.</summary>
public static class ServiceCollectionExtensions
{
    public static IServiceCollection AddPipelinesActivities(this IServiceCollection services)
    {
        services.AddActivity<LoadJsonlActivity>();
        services.AddActivity<SampleActivity>();
        services.AddActivity<SplitActivity>();
        services.AddActivity<JsonReportActivity>();
        services.AddActivityRegistry();
        services.AddSingleton<ExecutionEnvironment>();
        return services;
    }
}
