using Pipelines.Activities.Erasure;
using Pipelines.Engine.Activities;
using Pipelines.Models.Common;
using static TorchSharp.torch;

namespace Pipelines.Activities.Causal;

/// <summary>One labelled example: its token ids, label, split group and, per probed position, the control task's key (its word type).</summary>
public sealed record ProbeExample(IReadOnlyList<int> Ids, string Label, string Group, IReadOnlyList<string> ControlKeys);

/// <summary>
/// Linear probes per layer × position (research/causal.md §6.1): a seeded 60/20/20 split grouped so that no group
/// crosses splits, L2 chosen on validation, and the control task of Hewitt and Liang (each word type a fixed random
/// label drawn from the training labels' distribution) trained the same way.
/// </summary>
public static class ProbeTraining
{
    public static (ProbeResults Results, List<(string Name, Tensor Tensor)> Weights) Train(Tensor activations, IReadOnlyList<ProbeExample> rows, string hook,
        IReadOnlyList<int> layers, IReadOnlyList<string> positions, IReadOnlyList<double> lambdas, long seed, int steps = 300,
        Action<double, string>? progress = null, CancellationToken ct = default)
    {
        var classes = rows.Select(r => r.Label).Distinct().Order(StringComparer.Ordinal).ToList();
        if (classes.Count < 2)
        {
            throw new ActivityException($"dataset: probes need at least two labels; every row has \"{classes.FirstOrDefault()}\"");
        }
        var y = rows.Select(r => (long)classes.IndexOf(r.Label)).ToArray();
        var (train, validation, test) = Split(rows, seed);
        var chance = test.GroupBy(i => y[i]).Max(g => g.Count()) / (double)test.Length;
        var weights = new List<(string, Tensor)>();
        var cells = new List<IReadOnlyList<ProbeCell>>();
        for (var l = 0; l < layers.Count; l++)
        {
            var row = new List<ProbeCell>();
            for (var p = 0; p < positions.Count; p++)
            {
                ct.ThrowIfCancellationRequested();
                using var scope = NewDisposeScope();
                var x = activations[.., l, p];
                var control = ControlLabels(rows, p, y, train, classes.Count, seed);
                var (probe, lambda) = Fit(x, y, train, validation, test, classes.Count, lambdas, steps, seed);
                var (controlProbe, _) = Fit(x, control, train, validation, test, classes.Count, lambdas, steps, seed);
                var truth = test.Select(i => y[i]).ToArray();
                var (low, high) = Wilson(probe.TestAccuracy, test.Length);
                row.Add(new ProbeCell(layers[l], positions[p], probe.TestAccuracy, Balanced(probe.TestPredictions, truth, classes.Count), low, high,
                    controlProbe.TestAccuracy, probe.TestAccuracy - controlProbe.TestAccuracy, lambda, probe.TrainAccuracy));
                var d = activations.shape[^1];
                weights.Add(($"L{layers[l]}.{positions[p]}.weight", tensor(probe.Weights, [classes.Count, d]).MoveToOuterDisposeScope()));
                weights.Add(($"L{layers[l]}.{positions[p]}.bias", tensor(probe.Bias).MoveToOuterDisposeScope()));
                progress?.Invoke((l * positions.Count + p + 1.0) / (layers.Count * positions.Count), $"layer {layers[l]}, {positions[p]}: {probe.TestAccuracy:P1} (control {controlProbe.TestAccuracy:P1})");
            }
            cells.Add(row);
        }
        var results = new ProbeResults
        {
            Hook = hook, Layers = layers, Positions = positions, Classes = classes, Chance = chance,
            Train = train.Length, Validation = validation.Length, Test = test.Length,
            Split = $"60/20/20 by group (seed {seed}): no group in two splits",
            ControlTask = "Hewitt & Liang: each word type (the row's \"word\", else the token at the probed position) gets a fixed random label from the training labels' distribution",
            Cells = cells,
        };
        return (results, weights);
    }

    private static (LinearProbe Probe, double Lambda) Fit(Tensor x, long[] y, int[] train, int[] validation, int[] test, int classes, IReadOnlyList<double> lambdas, int steps, long seed)
    {
        Tensor Rows(int[] index) => x.index_select(0, tensor(index.Select(i => (long)i).ToArray()));
        long[] Labels(int[] index) => index.Select(i => y[i]).ToArray();
        LinearProbe? best = null;
        var bestLambda = lambdas[0];
        foreach (var lambda in lambdas)
        {
            // Choose λ on validation (the first best wins ties), then report that probe's test accuracy.
            var onValidation = LinearProbe.Fit(Rows(train), Labels(train), Rows(validation), Labels(validation), classes, lambda, steps, seed);
            if (best is null || onValidation.TestAccuracy > best.TestAccuracy)
            {
                best = onValidation;
                bestLambda = lambda;
            }
        }
        return (LinearProbe.Fit(Rows(train), Labels(train), Rows(test), Labels(test), classes, bestLambda, steps, seed), bestLambda);
    }

    /// <summary>Groups shuffled with the seed and dealt to train, validation and test until each holds its share of rows.</summary>
    public static (int[] Train, int[] Validation, int[] Test) Split(IReadOnlyList<ProbeExample> rows, long seed)
    {
        var groups = rows.Select((r, i) => (r.Group, i)).GroupBy(g => g.Group, g => g.i).OrderBy(g => g.Key, StringComparer.Ordinal).ToList();
        if (groups.Count < 3)
        {
            throw new ActivityException($"dataset: the split needs at least 3 groups (rows' \"group\", or rows when there is none); there are {groups.Count}");
        }
        new SeededRandom(seed).Shuffle(groups);
        var (train, validation, test) = (new List<int>(), new List<int>(), new List<int>());
        var dealt = 0;
        foreach (var g in groups)
        {
            var share = dealt / (double)rows.Count; // where this group starts in the shuffled order
            (share < 0.6 ? train : share < 0.8 ? validation : test).AddRange(g);
            dealt += g.Count();
        }
        if (validation.Count == 0 || test.Count == 0)
        {
            throw new ActivityException($"dataset: {rows.Count} rows in {groups.Count} groups leave no validation or test rows; add rows or groups");
        }
        return (train.ToArray(), validation.ToArray(), test.ToArray());
    }

    /// <summary>A label per word type, drawn once from the training labels (so the control task has the task's class balance).</summary>
    private static long[] ControlLabels(IReadOnlyList<ProbeExample> rows, int position, long[] y, int[] train, int classes, long seed)
    {
        var pool = train.Select(i => y[i]).ToArray();
        var byKey = new Dictionary<string, long>();
        return rows.Select(r =>
        {
            var key = r.ControlKeys[position];
            if (!byKey.TryGetValue(key, out var label))
            {
                label = pool[new SeededRandom(seed ^ (long)Fnv(key)).Next(pool.Length)];
                byKey[key] = label;
            }
            return label;
        }).ToArray();
    }

    private static ulong Fnv(string s)
    {
        var h = 14695981039346656037UL;
        foreach (var c in s)
        {
            h = (h ^ c) * 1099511628211UL;
        }
        return h;
    }

    private static double Balanced(long[] predicted, long[] truth, int classes)
    {
        var recalls = Enumerable.Range(0, classes).Where(c => truth.Contains(c))
            .Select(c => truth.Zip(predicted).Count(p => p.First == c && p.Second == c) / (double)truth.Count(t => t == c)).ToList();
        return recalls.Count == 0 ? double.NaN : recalls.Average();
    }

    /// <summary>The 95 % Wilson score interval of a proportion.</summary>
    public static (double Low, double High) Wilson(double p, int n)
    {
        if (n == 0)
        {
            return (double.NaN, double.NaN);
        }
        const double z = 1.96;
        var denominator = 1 + z * z / n;
        var centre = (p + z * z / (2 * n)) / denominator;
        var half = z * Math.Sqrt(p * (1 - p) / n + z * z / (4.0 * n * n)) / denominator;
        return (Math.Max(0, centre - half), Math.Min(1, centre + half));
    }
}
