using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Training;
using Pipelines.Models.Transformer;

namespace Pipelines.Tests.Activities;

/// <summary>One load per model per process, one step at a time per model, hooks cleared between steps, bounded.</summary>
public sealed class ModelCacheTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "pipelines-cache-" + Guid.NewGuid().ToString("N")[..8]);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private Artifact Model(string name, long seed)
    {
        var dir = Path.Combine(_dir, name);
        using (var model = new HookedTransformer(ToyTrainer.ModelConfig(new ToyTrainingOptions())).InitWeights(seed))
        {
            Checkpoint.Save(model, dir);
        }
        ToyTrainer.Tokenizer().Save(Path.Combine(dir, "tokenizer.json"), [ToyTasks.Pad, ToyTasks.Bos, ToyTasks.Unknown]);
        return new Artifact("digest-" + name, ArtifactKinds.Model, "inode/directory", dir, 0, true, "model");
    }

    [Fact]
    public async Task AModelIsLoadedOnceLentToOneStepAtATimeAndEvictedBeyondCapacity()
    {
        var cache = new ModelCache(capacity: 1);
        var a = Model("a", 1);
        var b = Model("b", 2);
        HookedTransformer first;
        using (var lease = cache.Acquire(a))
        {
            first = lease.Model;
            lease.Model.Hook(HookNames.ResidPre(0)).Add((_, _) => null);
        }
        using (var again = cache.Acquire(a))
        {
            Assert.Same(first, again.Model); // not reloaded
            Assert.False(again.Model.Hook(HookNames.ResidPre(0)).HasHooks); // the last step's hooks are gone
            var waiting = Task.Run(() => { using var other = cache.Acquire(a); return DateTime.UtcNow; });
            await Task.Delay(300);
            Assert.False(waiting.IsCompleted); // a second step waits for the model
            var released = DateTime.UtcNow;
            again.Dispose();
            Assert.True(await waiting >= released);
        }
        using (cache.Acquire(b))
        {
            Assert.Equal(2, cache.Count); // a is idle, b is held
        }
        Assert.Equal(1, cache.Count); // capacity 1: the least recently used idle model was disposed
    }
}
