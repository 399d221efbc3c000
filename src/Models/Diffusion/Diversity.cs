using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Models.Diffusion;

/// <summary>
/// Sample diversity on frozen features (research diffusion.md §4.3; the toy's DreamSim substitute): the mean over
/// ordered pairs of 1 − cos between L2-normalised features, and the Fréchet distance between two feature sets,
/// ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2(Σ₁^½ Σ₂ Σ₁^½)^½), computed in float64.
/// </summary>
public static class Diversity
{
    public static double MeanPairwiseDistance(Tensor features)
    {
        using var scope = NewDisposeScope();
        var n = features.shape[0];
        if (n < 2)
        {
            return 0;
        }
        var f = features.to(ScalarType.Float64);
        f = f / f.norm(1, keepdim: true).clamp_min(Scalars.Of(1e-12));
        var cos = matmul(f, f.t());
        var offDiagonal = cos.sum().item<double>() - cos.diagonal().sum().item<double>();
        return 1 - offDiagonal / (n * (n - 1));
    }

    public static double Frechet(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        var x = a.to(ScalarType.Float64);
        var y = b.to(ScalarType.Float64);
        var (mx, cx) = Moments(x);
        var (my, cy) = Moments(y);
        var sx = SqrtPsd(cx);
        var inner = SqrtPsd(matmul(matmul(sx, cy), sx));
        var value = (mx - my).Squared().sum().item<double>() + cx.trace().item<double>() + cy.trace().item<double>() - 2 * inner.trace().item<double>();
        return Math.Max(0, value);
    }

    private static (Tensor Mean, Tensor Cov) Moments(Tensor x)
    {
        var mean = x.mean([0L]);
        var centred = x - mean;
        var cov = matmul(centred.t(), centred).Over(Math.Max(1, x.shape[0] - 1));
        return (mean, cov);
    }

    /// <summary>The symmetric square root of a positive semi-definite matrix (negative eigenvalues from rounding clipped to 0).</summary>
    public static Tensor SqrtPsd(Tensor m)
    {
        var sym = m.Plus(m.t()).div(Scalars.Int(2));
        var (values, vectors) = linalg.eigh(sym);
        return matmul(vectors * values.clamp_min(Scalars.Int(0)).sqrt().unsqueeze(0), vectors.t());
    }
}
