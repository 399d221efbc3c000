using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Models.Transformer;

/// <summary>
/// One step of an intervention plan at a hook point. With <see cref="Head"/> set, it touches only that head's slice
/// (dimension 2 of hook_z, hook_q/k/v, hook_result, hook_q/k/v_input); <see cref="Positions"/> limits it to positions.
/// </summary>
public abstract record Intervention(string Hook)
{
    public int? Head { get; init; }
    public IReadOnlyList<int>? Positions { get; init; }

    /// <summary>
    /// Per-row positions: a boolean [B, T] mask of the positions touched in each row (spans, or a base position that
    /// differs from row to row). Combines with <see cref="Positions"/> and <see cref="Head"/>.
    /// </summary>
    public Tensor? RowMask { get; init; }

    internal abstract Tensor Apply(Tensor activation);

    /// <summary>Replaces the selected part of <paramref name="activation"/> with the same part of <paramref name="value"/>.</summary>
    protected Tensor Replace(Tensor activation, Tensor value)
    {
        var mask = Selection(activation);
        return where(mask, value.to(activation.dtype).expand_as(activation), activation);
    }

    /// <summary>A boolean mask, broadcastable to the activation, of what this intervention touches.</summary>
    protected Tensor Selection(Tensor activation)
    {
        var shape = activation.shape.Select(_ => 1L).ToArray();
        var mask = ones(shape, dtype: ScalarType.Bool, device: activation.device);
        if (Positions is { } positions)
        {
            var p = zeros(activation.shape[1], dtype: ScalarType.Bool, device: activation.device);
            p[tensor(positions.Select(i => (long)i).ToArray(), device: activation.device)] = tensor(true);
            var view = shape.ToArray();
            view[1] = activation.shape[1];
            mask = mask.logical_and(p.view(view));
        }
        if (RowMask is { } rows)
        {
            var view = shape.ToArray();
            view[0] = rows.shape[0];
            view[1] = rows.shape[1];
            mask = mask.logical_and(rows.to(ScalarType.Bool).to(activation.device).view(view));
        }
        if (Head is { } head)
        {
            if (activation.dim() < 4)
            {
                throw new ArgumentException($"{Hook} has no head dimension; leave Head unset");
            }
            var h = zeros(activation.shape[2], dtype: ScalarType.Bool, device: activation.device);
            h[head] = tensor(true);
            var view = shape.ToArray();
            view[2] = activation.shape[2];
            mask = mask.logical_and(h.view(view));
        }
        return mask;
    }
}

/// <summary>Activation patching: the selected part takes the value from another run (e.g. the corrupted run's cache).</summary>
public sealed record Patch(string Hook, Tensor Value) : Intervention(Hook)
{
    internal override Tensor Apply(Tensor activation) => Replace(activation, Value);
}

/// <summary>
/// An interchange intervention through a featurizer (research/causal.md §2.4): with an orthonormal basis W [d, k]
/// (DAS), x' = x + (source − x)·W·Wᵀ on the selected part, so only the subspace's coordinates come from the source;
/// without one, the full vector (x' = source). <see cref="Source"/> broadcasts to the activation ([B, T, d]).
/// A <see cref="Gate"/> [k] in [0, 1] weighs each coordinate (x' = x + (((source − x)·W) ⊙ g)·Wᵀ): the soft masks
/// DBM and Boundless DAS train.
/// </summary>
public sealed record Interchange(string Hook, Tensor Source, Tensor? Basis = null) : Intervention(Hook)
{
    public Tensor? Gate { get; init; }

    internal override Tensor Apply(Tensor activation)
    {
        if (Basis is null)
        {
            return Replace(activation, Source);
        }
        var w = Basis.to(activation.dtype);
        var coordinates = (Source.to(activation.dtype) - activation).matmul(w);
        if (Gate is { } gate)
        {
            coordinates = coordinates * gate.to(activation.dtype);
        }
        var moved = activation.Plus(coordinates.matmul(w.t()));
        return where(Selection(activation), moved, activation);
    }
}

/// <summary>Ablation: the selected part becomes zero, or a given mean activation (mean ablation).</summary>
public sealed record Ablate(string Hook, Tensor? Mean = null) : Intervention(Hook)
{
    internal override Tensor Apply(Tensor activation) => Replace(activation, Mean ?? zeros_like(activation));
}

/// <summary>Steering: adds <c>Scale · Direction</c> to the selected part (Direction broadcasts, e.g. [d_model]).</summary>
public sealed record Steer(string Hook, Tensor Direction, double Scale) : Intervention(Hook)
{
    internal override Tensor Apply(Tensor activation) =>
        activation.Plus(where(Selection(activation), Direction.to(activation.dtype).mul(Scalars.Of(Scale)).expand_as(activation), zeros_like(activation)));
}

/// <summary>Runs a plan of interventions as one forward: compiled to hooks, removed afterwards.</summary>
public static class Interventions
{
    public static Tensor Run(HookedTransformer model, Tensor tokens, IEnumerable<Intervention> plan, Tensor? attentionMask = null, ForwardOptions? options = null)
    {
        var steps = plan.ToList();
        foreach (var step in steps)
        {
            model.Hook(step.Hook); // unknown names fail before anything runs
        }
        var hooks = steps.GroupBy(s => s.Hook).Select(g => (g.Key, (Func<Tensor, HookPoint, Tensor?>)((x, _) => g.Aggregate(x, (acc, s) => s.Apply(acc)))));
        var needsSplit = steps.Any(s => s.Hook.Contains("_input", StringComparison.Ordinal));
        var needsResult = steps.Any(s => s.Hook.EndsWith("hook_result", StringComparison.Ordinal));
        options = (options ?? new ForwardOptions()) with
        {
            SplitQkvInput = (options?.SplitQkvInput ?? false) || needsSplit,
            UseAttnResult = (options?.UseAttnResult ?? false) || needsResult,
        };
        return model.RunWithHooks(tokens, hooks, attentionMask, options);
    }
}
