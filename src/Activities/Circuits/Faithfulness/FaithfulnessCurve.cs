namespace Pipelines.Activities.Circuits.Faithfulness;

/// <summary>One point of a faithfulness curve: the fraction of edges kept and the circuit's faithfulness.</summary>
public sealed record CurvePoint(double Fraction, double Faithfulness, long Edges, double Metric);

/// <summary>
/// MIB's faithfulness measures (research §5.1): f(C) = (m(C) − m(∅)) / (m(N) − m(∅)); the curve over the edge-fraction
/// grid; CPR = ∫ f and CMD = ∫ |1 − f| by the trapezoid rule on the linear fraction axis (MIB fix a150644).
/// </summary>
public static class FaithfulnessCurve
{
    /// <summary>MIB's grid: 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50 and 100 % of the edges.</summary>
    public static readonly IReadOnlyList<double> MibGrid = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0];

    public static double Faithfulness(double circuit, double empty, double full) =>
        full == empty ? double.NaN : (circuit - empty) / (full - empty);

    /// <summary>Integrated circuit performance ratio: Σ (x_{i+1} − x_i)(f_i + f_{i+1})/2. Higher is better.</summary>
    public static double Cpr(IReadOnlyList<CurvePoint> curve) => Trapezoid(curve, p => p.Faithfulness);

    /// <summary>Integrated circuit–model distance: Σ (x_{i+1} − x_i)(|1 − f_i| + |1 − f_{i+1}|)/2. Zero is best.</summary>
    public static double Cmd(IReadOnlyList<CurvePoint> curve) => Trapezoid(curve, p => Math.Abs(1 - p.Faithfulness));

    /// <summary>How many standard errors m(N) − m(∅) must clear for faithfulness to be defined.</summary>
    public const double MinSeparationInStandardErrors = 3;

    /// <summary>
    /// Whether f is defined on these examples: the mean paired difference d = m_N − m_∅ must be clearly non-zero,
    /// |mean d| ≥ 3 standard errors of that mean (and not vanishingly small). When the full model and the empty
    /// circuit score the same (a model that never learned the task, or pairs whose corruption changes nothing), f
    /// divides noise by noise, so it is reported as undefined with the reason, never as a number.
    /// </summary>
    public static string? UndefinedReason(IReadOnlyList<float> full, IReadOnlyList<float> empty)
    {
        var n = Math.Min(full.Count, empty.Count);
        if (n == 0)
        {
            return "no examples";
        }
        var d = Enumerable.Range(0, n).Select(i => (double)full[i] - empty[i]).ToArray();
        if (d.Any(x => !double.IsFinite(x)))
        {
            return "the metric is not finite (NaN or infinity) on some examples";
        }
        var mean = d.Average();
        var sd = n > 1 ? Math.Sqrt(d.Sum(x => (x - mean) * (x - mean)) / (n - 1)) : 0;
        var se = sd / Math.Sqrt(n);
        var scale = Math.Max(Math.Abs(full.Take(n).Average(x => (double)x)), Math.Abs(empty.Take(n).Average(x => (double)x)));
        if (Math.Abs(mean) <= 1e-6 * Math.Max(1, scale) || Math.Abs(mean) < MinSeparationInStandardErrors * se)
        {
            return $"m(N) − m(∅) = {mean:G3} is within {MinSeparationInStandardErrors} standard errors ({se:G3}) of 0 over {n} examples: " +
                   "the full model and the empty circuit do not differ on this task, so faithfulness f = (m(C) − m(∅)) / (m(N) − m(∅)) is undefined";
        }
        return null;
    }

    private static double Trapezoid(IReadOnlyList<CurvePoint> curve, Func<CurvePoint, double> y)
    {
        var points = curve.OrderBy(p => p.Fraction).ToList();
        var area = 0.0;
        for (var i = 0; i + 1 < points.Count; i++)
        {
            area += (points[i + 1].Fraction - points[i].Fraction) * (y(points[i]) + y(points[i + 1])) / 2;
        }
        return area;
    }
}
