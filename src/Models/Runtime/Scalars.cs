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
}
