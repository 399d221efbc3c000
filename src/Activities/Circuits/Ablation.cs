using Pipelines.Engine.Activities;
using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>What an out-of-circuit (or attributed) edge carries instead of its clean value (research §2.6).</summary>
public enum AblationKind { Counterfactual, Mean, MeanPositional, Zero }

/// <summary>
/// Builds ablated source values [B, T, n_forward, d]: the counterfactual run's, the dataset mean (over examples and
/// non-pad positions, per source: the intended semantics of EAP-IG's compute_mean_activations, without its
/// last-position and across-node averaging bugs), the per-position mean, or zero.
/// </summary>
public sealed class Ablation
{
    private readonly AblationKind _kind;
    private readonly Tensor? _mean; // [F, d] or [T, F, d]

    private Ablation(AblationKind kind, Tensor? mean)
    {
        _kind = kind;
        _mean = mean;
    }

    public AblationKind Kind => _kind;

    /// <summary>Prepares an ablation; mean kinds average the clean prompts of <paramref name="batch"/>.</summary>
    public static Ablation Prepare(AblationKind kind, CircuitRun run, CounterfactualBatch batch, int batchSize)
    {
        if (kind is AblationKind.Counterfactual or AblationKind.Zero)
        {
            return new Ablation(kind, null);
        }
        Tensor? sum = null;
        Tensor? count = null;
        foreach (var (start, n) in batch.Batches(batchSize))
        {
            using var scope = NewDisposeScope();
            var (clean, _, mask, _) = batch.Slice(start, n);
            var values = run.SourceValues(clean, mask); // [n, T, F, d]
            var weights = mask.to(values.dtype).unsqueeze(-1).unsqueeze(-1); // [n, T, 1, 1]
            var s = kind == AblationKind.Mean ? (values * weights).sum([0L, 1L]) : (values * weights).sum(0L);
            var c = kind == AblationKind.Mean ? weights.sum() : weights.sum(0L); // scalar or [T, 1, 1]
            sum = sum is null ? s.MoveToOuterDisposeScope() : sum.Plus(s).MoveToOuterDisposeScope();
            count = count is null ? c.MoveToOuterDisposeScope() : count.Plus(c).MoveToOuterDisposeScope();
        }
        if (kind == AblationKind.MeanPositional && count!.min().item<float>() == 0)
        {
            throw new ActivityException("mean-positional ablation needs every position filled in some example; use mean");
        }
        var mean = (sum! / count!).detach();
        mean.DetachFromDisposeScope();
        return new Ablation(kind, mean);
    }

    /// <summary>The ablated source values for one slice of the batch.</summary>
    public Tensor Values(CircuitRun run, Tensor clean, Tensor corrupted, Tensor? mask)
    {
        var shape = new[] { clean.shape[0], clean.shape[1] };
        return _kind switch
        {
            AblationKind.Counterfactual => run.SourceValues(corrupted, mask),
            AblationKind.Zero => run.SourceValues(clean, mask).zero_(),
            AblationKind.Mean => _mean!.unsqueeze(0).unsqueeze(0).expand(shape[0], shape[1], -1, -1).clone(),
            _ => _mean![..(int)shape[1]].unsqueeze(0).expand(shape[0], -1, -1, -1).clone(),
        };
    }

    /// <summary>The workflow name of an ablation kind.</summary>
    public static string Name(AblationKind kind) => kind switch
    {
        AblationKind.MeanPositional => "mean-positional",
        _ => kind.ToString().ToLowerInvariant(),
    };
}
