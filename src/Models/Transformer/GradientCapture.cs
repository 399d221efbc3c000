using static TorchSharp.torch;

namespace Pipelines.Models.Transformer;

/// <summary>
/// Backward access to activations: while attached, the named activations keep their gradient (retain_grad) and
/// outlive the forward's dispose scope. Run a forward, call backward on a metric, then read <see cref="Grad"/>.
/// </summary>
public sealed class GradientCapture : IDisposable
{
    private readonly Dictionary<string, Tensor> _activations = new(StringComparer.Ordinal);
    private readonly List<IDisposable> _hooks = [];

    public GradientCapture(HookedTransformer model, IEnumerable<string> names)
    {
        foreach (var name in names)
        {
            _hooks.Add(model.Hook(name).Add((x, h) =>
            {
                if (!x.requires_grad)
                {
                    return null;
                }
                x.retain_grad();
                x.DetachFromDisposeScope();
                if (_activations.Remove(h.Name, out var old))
                {
                    old.Dispose();
                }
                _activations[h.Name] = x;
                return null;
            }));
        }
    }

    /// <summary>The activation seen in the last forward.</summary>
    public Tensor Activation(string name) => _activations[name];

    /// <summary>∂(what backward was called on)/∂activation, after backward.</summary>
    public Tensor Grad(string name) => _activations.TryGetValue(name, out var a) && a.grad is { } g
        ? g
        : throw new InvalidOperationException($"no gradient for \"{name}\": run a forward with grad enabled, then backward");

    /// <summary>
    /// Like <see cref="Grad"/>, but zero when the activation was seen and has no path to what backward was called on
    /// (e.g. its consumer's output was replaced by a constant): autograd leaves such gradients undefined.
    /// </summary>
    public Tensor GradOrZero(string name) => _activations.TryGetValue(name, out var a)
        ? a.grad ?? zeros_like(a)
        : throw new InvalidOperationException($"no activation for \"{name}\": run a forward with grad enabled first");

    public void Dispose()
    {
        foreach (var h in _hooks)
        {
            h.Dispose();
        }
        foreach (var a in _activations.Values)
        {
            a.Dispose();
        }
        _activations.Clear();
    }
}
