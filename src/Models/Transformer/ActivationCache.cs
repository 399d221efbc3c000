using static TorchSharp.torch;

namespace Pipelines.Models.Transformer;

/// <summary>Activations by hook name; owns its tensors (outside any dispose scope) until disposed.</summary>
public sealed class ActivationCache : IDisposable
{
    private readonly Dictionary<string, Tensor> _values = new(StringComparer.Ordinal);

    public Tensor this[string name] => _values.TryGetValue(name, out var t) ? t : throw new KeyNotFoundException($"no cached activation \"{name}\"");

    /// <summary>TransformerLens-style short lookup: ("pattern", 0) → blocks.0.attn.hook_pattern.</summary>
    public Tensor this[string shortName, int layer] =>
        _values.FirstOrDefault(p => p.Key.StartsWith($"blocks.{layer}.", StringComparison.Ordinal) && p.Key.EndsWith("hook_" + shortName, StringComparison.Ordinal)).Value
        ?? throw new KeyNotFoundException($"no cached activation \"{shortName}\" in layer {layer}");

    public IReadOnlyCollection<string> Names => _values.Keys;

    public int Count => _values.Count;

    internal void Store(string name, Tensor value)
    {
        var copy = value.detach().clone();
        copy.DetachFromDisposeScope();
        if (_values.Remove(name, out var old))
        {
            old.Dispose();
        }
        _values[name] = copy;
    }

    public void Dispose()
    {
        foreach (var t in _values.Values)
        {
            t.Dispose();
        }
        _values.Clear();
    }
}
