using Microsoft.Extensions.DependencyInjection;
using Pipelines.Activities.Circuits;
using Pipelines.Activities.Data;
using Pipelines.Activities.Faithfulness;
using Pipelines.Activities.Models;
using Pipelines.Activities.Training;
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
        services.AddActivity<CircuitReportActivity>();
        services.AddActivity<TrendReportActivity>();
        services.AddActivity<ToyTaskActivity>();
        services.AddActivity<ImportCounterfactualActivity>();
        services.AddActivity<LoadModelActivity>();
        services.AddActivity<TrainToyActivity>();
        services.AddActivity<EvaluateModelActivity>();
        services.AddActivity<AttributeActivity>();
        services.AddActivity<FaithfulnessActivity>();
        services.AddActivity<PruneActivity>();
        services.AddActivity<Schemas.SchemaGenerateActivity>();
        services.AddActivityRegistry();
        // What changes numerics enters every cache key: the libtorch version, dtype and device kind.
        services.AddSingleton(_ => new ExecutionEnvironment()
            .Set("torch", Pipelines.Models.Runtime.TorchRuntime.TorchVersion)
            // What the activities actually compute in: float32 on the CPU (models load on the CPU; the CUDA path is
            // issue "Performance"). The key used to take the device from PIPELINES_DEVICE, which nothing obeyed.
            .Set("dtype", "float32")
            .Set("device", "cpu"));
        return services;
    }
}
