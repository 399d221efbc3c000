using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Tests.Circuits;

/// <summary>Two counterfactual pairs over the tiny models' 50-token vocabulary, and their loss.</summary>
public static class CircuitFixtures
{
    public static Tensor Clean => tensor(new long[,] { { 1, 5, 9, 2, 7, 3 }, { 1, 8, 8, 4, 6, 2 } });
    public static Tensor Corrupt => tensor(new long[,] { { 1, 5, 4, 2, 7, 3 }, { 1, 8, 3, 4, 6, 2 } });

    /// <summary>ℒ = −mean logit difference at the last position (token 9 vs 4, and 8 vs 3).</summary>
    public static Tensor Loss(Tensor logits)
    {
        var last = logits[.., -1];
        return -((last[0, 9] - last[0, 4]).Plus(last[1, 8]) - last[1, 3]).div(Scalars.Int(2));
    }
}
