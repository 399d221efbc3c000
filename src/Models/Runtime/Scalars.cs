using System.Collections.Concurrent;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Runtime;

/// <summary>
/// Tensor arithmetic that keeps its TorchSharp Scalars alive. An implicit conversion (<c>x * 0.5</c>), and several
/// TorchSharp members themselves (<c>a + b</c> passes a temporary alpha of 1; <c>square()</c> a temporary 2), make a
/// native Scalar that nothing references once its handle is read: in an optimised build the GC may finalize it while
/// libtorch still reads it, seen as "Expected false to be true ... toFloat" under parallel load (CI: AdamW.step, a
/// ResnetBlock2D add, Attention's <c>output + b_O</c>). Those members are banned at compile time
/// (build/BannedSymbols.txt, RS0030); code uses these instead. Constants come from a process-long cache
/// (<see cref="Of"/>, <see cref="Int"/>); values that vary call by call (<see cref="Times"/>, <see cref="Over"/>,
/// <see cref="Shift"/>) hold a Scalar of their own until the op returns.
/// </summary>
public static class Scalars
{
    private static readonly ConcurrentDictionary<double, Scalar> Doubles = new();
    private static readonly ConcurrentDictionary<long, Scalar> Longs = new();

#pragma warning disable RS0030 // the one place Scalars are made: each is kept alive by the cache or by a using
    /// <summary>A floating-point Scalar that is never collected (for constants: the cache never shrinks).</summary>
    public static Scalar Of(double value) => Doubles.GetOrAdd(value, v => v.ToScalar());

    /// <summary>An integer Scalar (for integer tensors) that is never collected.</summary>
    public static Scalar Int(long value) => Longs.GetOrAdd(value, v => v.ToScalar());

    /// <summary>A Scalar owned by the caller, who disposes it after the op that reads it (<c>using var s = …</c>).</summary>
    public static Scalar Owned(double value) => value.ToScalar();

    /// <summary>a · v for a value that varies call by call (not cached).</summary>
    public static Tensor Times(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.mul(s);
    }

    /// <summary>a / v for a value that varies call by call (not cached).</summary>
    public static Tensor Over(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.div(s);
    }

    /// <summary>a − v for a value that varies call by call (not cached).</summary>
    public static Tensor Minus(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.sub(s);
    }

    /// <summary>A boolean Scalar that is never collected (for masks: <c>index_fill_</c>, <c>masked_fill</c>).</summary>
    public static Scalar Bool(bool value) => value ? True : False;

    private static readonly Scalar True = true.ToScalar(), False = false.ToScalar();

    /// <summary><c>arange(start, stop)</c> with step 1, holding its own Scalars until it returns (TorchSharp's two-argument
    /// overload makes a temporary step).</summary>
    public static Tensor Range(long start, long stop, ScalarType? dtype = null, Device? device = null)
    {
        using Scalar from = start.ToScalar(), to = stop.ToScalar();
        return arange(from, to, Int(1), dtype ?? ScalarType.Int64, device);
    }

    /// <summary>a + v for a value that varies call by call (not cached).</summary>
    public static Tensor Shift(this Tensor a, double v)
    {
        using var s = v.ToScalar();
        return a.add(s, Int(1));
    }
#pragma warning restore RS0030

    /// <summary>a + b with a long-lived alpha (TorchSharp's <c>a + b</c> passes a temporary Scalar 1).</summary>
    public static Tensor Plus(this Tensor a, Tensor b) => a.add(b, Int(1));

    /// <summary>a += b in place, with a long-lived alpha.</summary>
    public static Tensor PlusInPlace(this Tensor a, Tensor b) => a.add_(b, Int(1));

    /// <summary>a + s with a long-lived alpha (TorchSharp's <c>add(Scalar)</c> passes a temporary Scalar 1).</summary>
    public static Tensor Plus(this Tensor a, Scalar s) => a.add(s, Int(1));

    /// <summary>1 − a (the same bits as <c>a.neg() + 1</c>).</summary>
    public static Tensor OneMinus(this Tensor a) => a.neg().add(Of(1.0), Int(1));

    /// <summary>a² as <c>torch.square</c> computes it (pow with the integer 2), with a long-lived exponent.</summary>
    public static Tensor Squared(this Tensor a) => a.pow(Int(2));

    /// <summary><c>arange(n)</c> (TorchSharp's one-argument overload makes a temporary start and step).</summary>
    public static Tensor Range(long n, ScalarType? dtype = null, Device? device = null) => Range(0, n, dtype, device);
}
