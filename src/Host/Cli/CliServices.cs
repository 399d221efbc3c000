using Microsoft.Extensions.DependencyInjection;
using Pipelines.Activities;
using Pipelines.Engine.Activities;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;
using Pipelines.Engine.Planning;
using Pipelines.Engine.Running;

namespace Pipelines.Host.Cli;

/// <summary>What the commands share: the activity registry, the store, the ledger and the runner.</summary>
public sealed class CliServices : IDisposable
{
    private readonly ServiceProvider _provider;
    private ArtifactStore? _store;
    private IRunLedger? _ledger;

    public CliServices(string? storeRoot)
    {
        StoreRoot = Path.GetFullPath(storeRoot ?? Environment.GetEnvironmentVariable("PIPELINES_STORE") ?? "artifacts");
        _provider = new ServiceCollection().AddPipelinesActivities().BuildServiceProvider();
    }

    public string StoreRoot { get; }
    public ActivityRegistry Registry => _provider.GetRequiredService<ActivityRegistry>();
    public WorkflowCompiler Compiler => new(Registry);
    public ArtifactStore Store => _store ??= new ArtifactStore(StoreRoot);
    public IRunLedger Ledger => _ledger ??= new SqliteRunLedger(Path.Combine(Store.Root, "ledger.db"));
    public InProcessRunner Runner => new(Store, Ledger, _provider.GetRequiredService<ExecutionEnvironment>(), _provider);

    public void Dispose()
    {
        _ledger?.Dispose();
        _provider.Dispose();
    }
}
