using static TorchSharp.torch;

namespace Pipelines.Models.Transformer;

/// <summary>One layer's cached keys and values, [B, S, Hkv, dh]; owned outside any dispose scope.</summary>
public sealed class LayerKv : IDisposable
{
    private Tensor? _k, _v;

    public long Length => _k?.shape[1] ?? 0;

    /// <summary>Appends new keys/values and returns the full sequences (valid until the next append).</summary>
    public (Tensor K, Tensor V) Append(Tensor k, Tensor v)
    {
        var newK = _k is null ? k.detach().clone() : cat([_k, k.detach()], 1);
        var newV = _v is null ? v.detach().clone() : cat([_v, v.detach()], 1);
        newK.DetachFromDisposeScope();
        newV.DetachFromDisposeScope();
        _k?.Dispose();
        _v?.Dispose();
        _k = newK;
        _v = newV;
        return (_k.alias(), _v.alias());
    }

    public void Dispose()
    {
        _k?.Dispose();
        _v?.Dispose();
        _k = _v = null;
    }
}

/// <summary>The KV cache of a generation: one <see cref="LayerKv"/> per layer plus the attention mask so far.</summary>
public sealed class KvCache : IDisposable
{
    private Tensor? _mask;

    public KvCache(int layers) => Layers = Enumerable.Range(0, layers).Select(_ => new LayerKv()).ToArray();

    public LayerKv[] Layers { get; }

    public long Length => Layers[0].Length;

    /// <summary>The key mask [B, S] for everything cached so far plus <paramref name="newMask"/>.</summary>
    internal Tensor ExtendMask(Tensor newMask)
    {
        var full = _mask is null ? newMask.detach().clone() : cat([_mask, newMask.detach()], 1);
        full.DetachFromDisposeScope();
        _mask?.Dispose();
        _mask = full;
        return _mask.alias();
    }

    public void Dispose()
    {
        foreach (var layer in Layers)
        {
            layer.Dispose();
        }
        _mask?.Dispose();
    }
}
