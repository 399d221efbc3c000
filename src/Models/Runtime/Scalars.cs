using System.Collections.Concurrent;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Runtime;

/// <summary>
/// Long-lived TorchSharp Scalars. An implicit conversion (<c>x * 0.5</c>) makes a temporary Scalar that the
/// operator does not keep alive: in an optimised build the GC may finalize it while libtorch still reads it (seen as
/// "Expected false to be true ... toFloat" under parallel load). Constants used on hot paths come from here instead,
/// and this cache keeps them alive for the life of the process.
/// </summary>
public static class Scalars
{
    private static readonly ConcurrentDictionary<double, Scalar> Doubles = new();
    private static readonly ConcurrentDictionary<long, Scalar> Longs = new();

    /// <summary>A floating-point Scalar that is never collected.</summary>
    public static Scalar Of(double value) => Doubles.GetOrAdd(value, v => v.ToScalar());

    /// <summary>An integer Scalar (for integer tensors) that is never collected.</summary>
    public static Scalar Int(long value) => Longs.GetOrAdd(value, v => v.ToScalar());

    /// <summary>
    /// a + b with a long-lived alpha. <c>a + b</c> (TorchSharp's <c>add(target)</c>) passes a temporary Scalar 1 that
    /// can be finalized mid-call; a 1,000-step toy training crashed on it in ResnetBlock2D. Hot paths add with this.
    /// </summary>
    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, Int(1));
}
