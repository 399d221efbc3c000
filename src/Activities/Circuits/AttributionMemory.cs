using System.Globalization;
using System.Text.RegularExpressions;
using Pipelines.Models.Transformer;

namespace Pipelines.Activities.Circuits;

/// <summary>
/// What one example of attribution holds at its peak, estimated from the model's shape, and the batch size a memory
/// budget allows. The terms: the activation-difference store Δ (tokens × n_forward × d_model, f32); each gradient
/// run's normalized attention inputs (runs × layers × tokens × d_model, f32), kept for the norm-Jacobian term; the
/// forward activations autograd keeps for the backward (per layer about 12 residual-width and 3 MLP-width vectors per
/// token, and the attention pattern); the logits and their gradient; and, for the fused path, the source values of the
/// corrupted and clean runs (embed, every head's z and every MLP output). It ignores a shared prefix of the pairs (the
/// fused path's Δ starts after it), so it is an upper bound.
/// The bench prints this estimate beside the measured peak (bench/Pipelines.Bench performance).
/// </summary>
public static partial class AttributionMemory
{
    public static long PerExample(TransformerConfig c, long tokens, int nForward, int activationBytes = 4, int runs = 1)
    {
        long d = c.DModel, l = c.NLayers;
        var delta = tokens * nForward * d * 4L + runs * l * tokens * d * 4L;
        var activations = tokens * l * (12 * d + 3L * c.DMlp) * activationBytes + l * c.NHeads * tokens * tokens * activationBytes * 2;
        var logits = 2 * tokens * c.DVocab * 4L;
        var sources = 2 * tokens * l * (c.NHeads * c.HeadDim + d) * 4L;
        return delta + activations + logits + sources;
    }

    /// <summary>The largest batch size ≤ <paramref name="requested"/> whose estimate fits <paramref name="budgetBytes"/> (at least 1).</summary>
    public static int BatchSize(long budgetBytes, long perExample, int requested) =>
        (int)Math.Clamp(budgetBytes / Math.Max(1, perExample), 1, requested);

    /// <summary>"512MiB", "4GiB", "2GB", "1.5G" or a plain byte count; null for an empty string.</summary>
    public static long? Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }
        var m = Size().Match(text.Trim());
        if (!m.Success || !double.TryParse(m.Groups[1].Value, NumberStyles.Float, CultureInfo.InvariantCulture, out var value) || value <= 0)
        {
            throw new FormatException($"\"{text}\" is not a memory size: expected a number and a unit, such as 512MiB, 4GiB or 2GB");
        }
        var unit = m.Groups[2].Value.ToUpperInvariant();
        double scale = unit switch
        {
            "" or "B" => 1,
            "K" or "KB" => 1e3,
            "KIB" => 1024,
            "M" or "MB" => 1e6,
            "MIB" => 1024 * 1024,
            "G" or "GB" => 1e9,
            "GIB" => 1024.0 * 1024 * 1024,
            "T" or "TB" => 1e12,
            _ => 1024.0 * 1024 * 1024 * 1024,
        };
        var bytes = value * scale;
        return bytes >= long.MaxValue ? long.MaxValue : (long)bytes;
    }

    [GeneratedRegex(@"^([0-9]+(?:\.[0-9]+)?)\s*(B|KB?|KIB|MB?|MIB|GB?|GIB|TB?|TIB)?$", RegexOptions.IgnoreCase)]
    private static partial Regex Size();
}
