using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Transformer;

/// <summary>
/// A named place where an activation can be read, replaced or added to. A hook returns null to observe, or a
/// tensor to replace the activation. Identity (and nearly free, about 0.06 µs) when no hook is attached.
/// </summary>
public sealed class HookPoint : nn.Module<Tensor, Tensor>
{
    private readonly List<(int Id, Func<Tensor, HookPoint, Tensor?> Fn)> _hooks = [];
    private int _next;

    public HookPoint(string name) : base(name)
    {
        Name = name;
    }

    /// <summary>The canonical name, such as <c>blocks.0.attn.hook_z</c> (set by the model after construction).</summary>
    public string Name { get; internal set; }

    public bool HasHooks => _hooks.Count > 0;

    /// <summary>Adds a hook; dispose the result to remove it.</summary>
    public IDisposable Add(Func<Tensor, HookPoint, Tensor?> hook)
    {
        var id = _next++;
        _hooks.Add((id, hook));
        return new Remover(() => _hooks.RemoveAll(h => h.Id == id));
    }

    public void Clear() => _hooks.Clear();

    public override Tensor forward(Tensor x)
    {
        if (_hooks.Count == 0)
        {
            return x;
        }
        foreach (var (_, fn) in _hooks.ToArray())
        {
            var replaced = fn(x, this);
            if (replaced is not null)
            {
                x = replaced;
            }
        }
        return x;
    }

    private sealed class Remover(Action remove) : IDisposable
    {
        private Action? _remove = remove;

        public void Dispose()
        {
            _remove?.Invoke();
            _remove = null;
        }
    }
}
