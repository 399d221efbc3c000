using Pipelines.Models.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Adapters;

/// <summary>
/// The LoRA arithmetic both runtimes share (the language model's PEFT adapters and the UNet's kohya-style sliders):
/// the down-projection's Kaiming-uniform init, the up-projection's zero init, and the alpha/r scaling.
/// </summary>
public static class LoraMath
{
    /// <summary>Kaiming-uniform with negative slope a: U(±√(6 / ((1 + a²)·fan_in))). a = √5 is PyTorch's (and PEFT's) default, a = 1 kohya's.</summary>
    public static Tensor KaimingDown(long[] shape, long fanIn, double a, Generator generator)
    {
        var bound = Math.Sqrt(6.0 / ((1 + a * a) * fanIn));
        return rand(shape, generator: generator).mul_(Scalars.Of(2 * bound)).sub_(Scalars.Of(bound));
    }

    /// <summary>alpha / r, or alpha / √r with rank-stabilised LoRA.</summary>
    public static double Scaling(double alpha, int rank, bool rsLora = false) => rsLora ? alpha / Math.Sqrt(rank) : alpha / rank;
}
