using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>How closely two sets of edge scores agree (bf16 against f32, GPU against CPU).</summary>
public static class ScoreAgreement
{
    /// <summary>
    /// The Spearman correlation of |a| and |b| over all edges (rank by magnitude, as pruning does), and the largest
    /// |b − a| / |a| among a's top <paramref name="k"/> edges by |a|.
    /// </summary>
    public static (double Spearman, double TopRelativeError) Compare(Tensor a, Tensor b, int k)
    {
        using var scope = NewDisposeScope();
        var x = a.flatten().to(ScalarType.Float64).cpu();
        var y = b.flatten().to(ScalarType.Float64).cpu();
        Tensor Ranks(Tensor v) => v.abs().argsort().argsort().to(ScalarType.Float64);
        var rx = Ranks(x).Minus((x.shape[0] - 1) / 2.0);
        var ry = Ranks(y).Minus((y.shape[0] - 1) / 2.0);
        var rho = (rx * ry).sum() / (rx.Squared().sum().sqrt() * ry.Squared().sum().sqrt());
        var top = x.abs().topk(Math.Min(k, (int)x.shape[0])).indexes;
        var error = ((y[top] - x[top]).abs() / x[top].abs()).max();
        return (rho.item<double>(), error.item<double>());
    }
}
