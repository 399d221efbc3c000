using Microsoft.Extensions.DependencyInjection;
using Pipelines.Activities.Circuits;
using Pipelines.Activities.Data;
using Pipelines.Activities.Circuits.Faithfulness;
using Pipelines.Activities.Model;
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
        services.AddActivity<Crawl.CrawlExpandActivity>();
        services.AddActivity<Crawl.ToyWorldActivity>();
        services.AddActivity<Crawl.CrawlEvaluateActivity>();
        services.AddActivity<Erasure.ConceptWorldActivity>();
        services.AddActivity<Erasure.ErasureTrainActivity>();
        services.AddActivity<Erasure.ErasureProbeActivity>();
        services.AddActivity<Erasure.ErasureImportActivity>();
        services.AddActivity<Erasure.DiffusionErasureTrainActivity>();
        services.AddActivity<Erasure.DiffusionErasureProbeActivity>();
        services.AddActivity<Diffusion.SliderTrainActivity>();
        services.AddActivity<Diffusion.SliderDiscoverActivity>();
        services.AddActivity<Diffusion.SliderApplyActivity>();
        services.AddActivity<Diffusion.DiffusionTrainToyActivity>();
        services.AddActivity<Diffusion.DiffusionLoadActivity>();
        services.AddActivity<Diffusion.DiffusionSampleActivity>();
        services.AddActivity<Diffusion.DiffusionDtVisualizeActivity>();
        services.AddActivity<Diffusion.DiffusionDistillActivity>();
        services.AddActivity<Diffusion.DiffusionHybridActivity>();
        services.AddActivity<Diffusion.DiffusionDiversityActivity>();
        services.AddActivity<Reports.DiffusionReportActivity>();
        services.AddActivity<Causal.PatchingSweepActivity>();
        services.AddActivity<Causal.ProbeTrainActivity>();
        services.AddActivity<Causal.SteeringVectorActivity>();
        services.AddActivity<Causal.SteeringEvaluateActivity>();
        services.AddActivity<Causal.CausalFeaturizerActivity>();
        services.AddActivity<Causal.CausalIiaActivity>();
        services.AddActivity<Causal.CausalToyTaskActivity>();
        services.AddActivity<Causal.PatchingGenerateActivity>();
        services.AddActivity<Causal.MibExportActivity>();
        services.AddActivity<Causal.MibImportActivity>();
        services.AddActivity<CausalReportActivity>();
        services.AddActivity<CrawlReportActivity>();
        services.AddActivity<ErasureReportActivity>();
        services.AddActivity<Schemas.SchemaApplyActivity>();
        services.AddActivity<Schemas.SchemaGenerateActivity>();
        services.AddActivityRegistry();
        // What changes numerics enters every cache key: the libtorch version, dtype and device kind.
        services.AddSingleton(_ => new ExecutionEnvironment()
            .Set("torch", Pipelines.Models.Runtime.TorchRuntime.TorchVersion)
            // What the activities actually compute in: models load as float32 (F16/BF16 weights upcast; a model's own
            // dtype options are step inputs, so in the key already) onto the runtime's one compute device, whose kind
            // (cpu or cuda) is resolved here the way the activities resolve it.
            .Set("dtype", "float32")
            .Set("device", Pipelines.Models.Runtime.TorchRuntime.ComputeDeviceKind()));
        return services;
    }
}
