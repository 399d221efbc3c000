using Pipelines.Engine.Activities;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;

namespace Pipelines.Activities.Model;

/// <summary>
/// The process-wide model cache: a Model artifact is loaded once per process and lent to one step at a time (hooks
/// and gradients live on the instance, so a model is never shared by two steps at once). Keyed by the artifact's
/// content digest; at most PIPELINES_MODEL_CACHE models (default 1) stay loaded while no step holds them.
/// </summary>
public sealed class ModelCache
{
    private sealed class Entry(HookedTransformer model, ITextTokenizer tokenizer)
    {
        public HookedTransformer Model { get; } = model;
        public ITextTokenizer Tokenizer { get; } = tokenizer;
        public SemaphoreSlim Lock { get; } = new(1, 1);
        public int Leases;
        public long LastUsed;
    }

    private readonly Dictionary<string, Entry> _entries = new(StringComparer.Ordinal);
    private readonly object _gate = new();
    private long _clock;

    public static ModelCache Shared { get; } = new(int.TryParse(Environment.GetEnvironmentVariable("PIPELINES_MODEL_CACHE"), out var n) && n >= 0 ? n : 1);

    public ModelCache(int capacity) => Capacity = capacity;

    /// <summary>How many idle models stay loaded.</summary>
    public int Capacity { get; }

    /// <summary>How many models are loaded now (held or idle).</summary>
    public int Count
    {
        get
        {
            lock (_gate)
            {
                return _entries.Count;
            }
        }
    }

    /// <summary>
    /// Lends the model of an artifact, loading it on first use and waiting while another step holds it. An artifact
    /// without a digest (a scratch copy being checked) is loaded privately and disposed with the lease.
    /// </summary>
    public ModelLease Acquire(Artifact artifact, CancellationToken ct = default, ComputeDtype dtype = ComputeDtype.Float32)
    {
        if (artifact.Digest.Length == 0)
        {
            var (model, tokenizer) = ModelArtifacts.Open(artifact, dtype);
            return new ModelLease(model, tokenizer, () => model.Dispose());
        }
        Entry? entry;
        lock (_gate)
        {
            if (_entries.TryGetValue(Key(artifact, dtype), out entry))
            {
                entry.Leases++;
            }
        }
        if (entry is null)
        {
            var (model, tokenizer) = ModelArtifacts.Open(artifact, dtype); // outside the gate: loading can take minutes
            lock (_gate)
            {
                if (_entries.TryGetValue(Key(artifact, dtype), out var raced))
                {
                    model.Dispose();
                    entry = raced;
                }
                else
                {
                    entry = new Entry(model, tokenizer);
                    _entries[Key(artifact, dtype)] = entry;
                }
                entry.Leases++;
            }
        }
        try
        {
            entry.Lock.Wait(ct);
        }
        catch
        {
            Release(entry, locked: false);
            throw;
        }
        return new ModelLease(entry.Model, entry.Tokenizer, () => Release(entry, locked: true));
    }

    /// <summary>A model in another compute dtype is another instance (its weights are converted at load).</summary>
    private static string Key(Artifact artifact, ComputeDtype dtype) => dtype == ComputeDtype.Float32 ? artifact.Digest : $"{artifact.Digest}|{dtype}";

    private void Release(Entry entry, bool locked)
    {
        if (locked)
        {
            // What a step may have left on the instance: hooks and parameter gradients.
            entry.Model.ResetHooks();
            entry.Model.zero_grad();
            entry.Lock.Release();
        }
        var evicted = new List<Entry>();
        lock (_gate)
        {
            entry.Leases--;
            entry.LastUsed = ++_clock;
            var idle = _entries.Where(e => e.Value.Leases == 0).OrderBy(e => e.Value.LastUsed).ToList();
            foreach (var (key, value) in idle.Take(Math.Max(0, idle.Count - Capacity)))
            {
                _entries.Remove(key);
                evicted.Add(value);
            }
        }
        foreach (var e in evicted)
        {
            e.Model.Dispose();
            e.Lock.Dispose();
        }
    }
}

/// <summary>A model lent by <see cref="ModelCache"/>; dispose it to give the model back.</summary>
public sealed class ModelLease(HookedTransformer model, ITextTokenizer tokenizer, Action release) : IDisposable
{
    private int _released;

    public HookedTransformer Model { get; } = model;
    public ITextTokenizer Tokenizer { get; } = tokenizer;

    public void Deconstruct(out HookedTransformer model, out ITextTokenizer tokenizer) => (model, tokenizer) = (Model, Tokenizer);

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _released, 1) == 0)
        {
            release();
        }
    }
}
