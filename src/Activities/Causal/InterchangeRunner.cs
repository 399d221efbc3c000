using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Activities.Causal;

/// <summary>
/// Interchange interventions on counterfactual rows at one unit (hook, layer, position id): the source's activations at
/// its positions are written into the base run at the paired positions through a featurizer's basis (research §3.5).
/// The loss is teacher-forced cross-entropy on the expected tokens; evaluation decodes greedily, as MIB does.
/// </summary>
public sealed class InterchangeRunner(HookedTransformer model, ActivationCollector collector, PatchHook hook)
{
    public HookedTransformer Model => model;

    /// <summary>Source activations at each row's source positions: [N, P, d] on the compute device (P = the most positions of any row).</summary>
    public Tensor SourceActivations(IReadOnlyList<CounterfactualRow> rows, int layer, string position, int batchSize = 64, CancellationToken ct = default)
    {
        var name = PatchingSweep.HookName(hook, layer);
        var pairs = rows.Select(r => Counterfactuals.Of(r, position)).ToList();
        var width = pairs.Max(p => p.Source.Length);
        var parts = new List<Tensor>();
        using var noGrad = no_grad();
        for (var start = 0; start < rows.Count; start += batchSize)
        {
            ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var chunk = rows.Skip(start).Take(batchSize).ToList();
            var (ids, mask) = collector.Pack(chunk.Select(r => r.SourceIds).ToList());
            var (_, cache) = model.RunWithCache(ids, n => n == name, mask);
            using (cache)
            {
                var index = new long[chunk.Count, width];
                for (var r = 0; r < chunk.Count; r++)
                {
                    var source = pairs[start + r].Source;
                    for (var j = 0; j < width; j++)
                    {
                        index[r, j] = source[Math.Min(j, source.Length - 1)];
                    }
                }
                var rowsIndex = Scalars.Range(chunk.Count, device: ids.device).unsqueeze(1).expand(chunk.Count, width);
                parts.Add(cache[name][rowsIndex, tensor(index, device: ids.device)].to(ScalarType.Float32).MoveToOuterDisposeScope());
            }
        }
        var all = cat(parts, 0);
        foreach (var p in parts)
        {
            p.Dispose();
        }
        return all;
    }

    /// <summary>The intervention for rows whose sequences are <paramref name="width"/> wide: source vectors at the base positions.</summary>
    public Interchange Intervention(IReadOnlyList<CounterfactualRow> rows, Tensor sources, int layer, string position, int width, Tensor? basis, Tensor? gate)
    {
        var n = rows.Count;
        var d = sources.shape[2];
        var scatter = new long[n, width];
        var mask = new bool[n, width];
        for (var r = 0; r < n; r++)
        {
            var basePositions = Counterfactuals.Of(rows[r], position).Base;
            for (var j = 0; j < basePositions.Length; j++)
            {
                scatter[r, basePositions[j]] = j;
                mask[r, basePositions[j]] = true;
            }
        }
        var device = sources.device;
        var index = tensor(scatter, device: device).unsqueeze(-1).expand(n, width, d);
        var source = sources.gather(1, index); // [n, width, d]: row r's source vector j at its base position
        return new Interchange(PatchingSweep.HookName(hook, layer), source, basis) { RowMask = tensor(mask, device: device), Gate = gate };
    }

    /// <summary>Teacher-forced cross-entropy on the expected tokens with the intervention applied (differentiable in basis and gate).</summary>
    public Tensor Loss(IReadOnlyList<CounterfactualRow> rows, Tensor sources, int layer, string position, Tensor? basis, Tensor? gate)
    {
        var sequences = rows.Select(r => (IReadOnlyList<int>)r.BaseIds.Concat(r.ExpectedIds.Take(r.ExpectedIds.Count - 1)).ToList()).ToList();
        var (ids, mask) = collector.Pack(sequences);
        var logits = Interventions.Run(model, ids, [Intervention(rows, sources, layer, position, (int)ids.shape[1], basis, gate)], mask);
        var rowIndex = new List<long>();
        var at = new List<long>();
        var targets = new List<long>();
        for (var r = 0; r < rows.Count; r++)
        {
            for (var j = 0; j < rows[r].ExpectedIds.Count; j++)
            {
                rowIndex.Add(r);
                at.Add(rows[r].BaseIds.Count - 1 + j);
                targets.Add(rows[r].ExpectedIds[j]);
            }
        }
        var device = logits.device;
        var picked = logits[tensor(rowIndex.ToArray(), device: device), tensor(at.ToArray(), device: device)];
        return F.cross_entropy(picked, tensor(targets.ToArray(), device: device));
    }

    /// <summary>Greedy decoding of <paramref name="maxNew"/> tokens (0: each row's expected length) under the intervention.</summary>
    public List<string> Generate(IReadOnlyList<CounterfactualRow> rows, Tensor sources, int layer, string position, Tensor? basis, int maxNew) =>
        Greedy(rows.Select(r => r.BaseIds).ToList(), rows.Select(r => maxNew > 0 ? maxNew : r.ExpectedIds.Count).ToList(),
            width => [Intervention(rows, sources, layer, position, width, basis, null)]);

    /// <summary>Greedy answers without any intervention (the filter's check): of the base or the source prompts.</summary>
    public List<string> Plain(IReadOnlyList<IReadOnlyList<int>> prompts, IReadOnlyList<int> lengths) => Greedy(prompts, lengths, _ => []);

    /// <summary>Greedy decoding, row r for lengths[r] tokens, with the plan a sequence width needs (the interventions sit in the prompts).</summary>
    private List<string> Greedy(IReadOnlyList<IReadOnlyList<int>> prompts, IReadOnlyList<int> lengths, Func<int, IReadOnlyList<Intervention>> plan)
    {
        using var noGrad = no_grad();
        var sequences = prompts.Select(p => p.ToList()).ToList();
        var generated = prompts.Select(_ => new List<int>()).ToList();
        for (var s = 0; s < lengths.DefaultIfEmpty(0).Max(); s++)
        {
            using var scope = NewDisposeScope();
            var (ids, mask) = collector.Pack(sequences.Cast<IReadOnlyList<int>>().ToList());
            var logits = Interventions.Run(model, ids, plan((int)ids.shape[1]), mask);
            var last = tensor(sequences.Select(q => (long)q.Count - 1).ToArray(), device: logits.device);
            var next = logits[Scalars.Range(prompts.Count, device: logits.device), last].argmax(-1).cpu().data<long>().ToArray();
            for (var r = 0; r < prompts.Count; r++)
            {
                if (s < lengths[r])
                {
                    sequences[r].Add((int)next[r]);
                    generated[r].Add((int)next[r]);
                }
            }
        }
        return generated.Select(g => collector.Decode(g)).ToList();
    }

    /// <summary>The task's checker: exact match after trimming (case-insensitive); the leaderboard's: the expected text inside the output.</summary>
    public static bool Check(string output, string expected, bool leaderboard) => leaderboard
        ? output.Contains(expected.Trim(), StringComparison.OrdinalIgnoreCase)
        : string.Equals(output.Trim(), expected.Trim(), StringComparison.OrdinalIgnoreCase);

    internal static TorchSharp.Scalar S(double v) => Scalars.Of(v);
}
