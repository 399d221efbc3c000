using Pipelines.Activities.Circuits;
using Pipelines.Engine.Activities;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Causal;

/// <summary>Hook families a sweep patches.</summary>
public enum PatchHook { ResidPre, ResidPost, AttnOut, MlpOut, Z }

/// <summary>denoise: the clean activation into the corrupted run (sufficiency); noise: the corrupted one into the clean run (necessity).</summary>
public enum PatchDirection { Denoise, Noise }

/// <summary>Columns of the grid: every position (rows of one length), or the dataset schema's spans.</summary>
public enum PatchPositions { All, Spans }

/// <summary>
/// Activation patching over layers × positions (TransformerLens' <c>get_act_patch_*</c>, research/causal.md §6.2):
/// one cached run of the source prompts, then one patched run of the base prompts per cell. Per-head <c>z</c> patches
/// a head at every position, so its columns are heads.
/// </summary>
public sealed class PatchingSweep(HookedTransformer model)
{
    public static string HookName(PatchHook hook, int layer) => hook switch
    {
        PatchHook.ResidPre => HookNames.ResidPre(layer),
        PatchHook.ResidPost => HookNames.ResidPost(layer),
        PatchHook.AttnOut => HookNames.AttnOut(layer),
        PatchHook.MlpOut => HookNames.MlpOut(layer),
        _ => HookNames.Z(layer),
    };

    public static string Name(PatchHook hook) => hook switch
    {
        PatchHook.ResidPre => "resid_pre",
        PatchHook.ResidPost => "resid_post",
        PatchHook.AttnOut => "attn_out",
        PatchHook.MlpOut => "mlp_out",
        _ => "z",
    };

    /// <summary>Sweeps the grid and returns it with the column labels.</summary>
    public PatchingGrid Run(CounterfactualBatch batch, ITextTokenizer tokenizer, PatchHook hook, PatchDirection direction, PatchPositions positions,
        IReadOnlyList<int> layers, int batchSize, Action<double, string>? progress = null, CancellationToken ct = default)
    {
        var (labels, masks) = Columns(batch, tokenizer, hook, positions);
        var sums = new double[layers.Count, labels.Count];
        double clean = 0, corrupted = 0;
        var cells = layers.Count * labels.Count;
        var done = 0;
        using var noGrad = no_grad();
        foreach (var (start, n) in batch.Batches(batchSize, ct))
        {
            using var scope = NewDisposeScope();
            var (cleanIds, corruptIds, mask, perExample) = batch.Slice(start, n);
            var (baseIds, sourceIds) = direction == PatchDirection.Denoise ? (corruptIds, cleanIds) : (cleanIds, corruptIds);
            var names = layers.Select(l => HookName(hook, l)).ToHashSet();
            clean += perExample(model.Forward(cleanIds, mask).to(ScalarType.Float32)).sum().item<float>();
            corrupted += perExample(model.Forward(corruptIds, mask).to(ScalarType.Float32)).sum().item<float>();
            var (_, cache) = model.RunWithCache(sourceIds, names.Contains, mask);
            using (cache)
            {
                for (var li = 0; li < layers.Count; li++)
                {
                    var name = HookName(hook, layers[li]);
                    for (var c = 0; c < labels.Count; c++)
                    {
                        ct.ThrowIfCancellationRequested();
                        using var cell = NewDisposeScope();
                        var patch = new Interchange(name, cache[name])
                        {
                            RowMask = masks[c] is { } m ? m(start, n) : null,
                            Head = hook == PatchHook.Z ? c : null,
                        };
                        sums[li, c] += perExample(Interventions.Run(model, baseIds, [patch], mask).to(ScalarType.Float32)).sum().item<float>();
                        if (++done % 8 == 0 || done == cells)
                        {
                            progress?.Invoke((start + (double)n * done / cells) / batch.Count, $"{start + n} of {batch.Count} pairs, layer {layers[li]}");
                        }
                    }
                }
            }
            done = 0;
        }
        var count = batch.Count;
        var (mc, mk) = (clean / count, corrupted / count);
        var denominator = mc - mk;
        var degenerate = Math.Abs(denominator) < 1e-6;
        var raw = Enumerable.Range(0, layers.Count).Select(l => (IReadOnlyList<double>)Enumerable.Range(0, labels.Count).Select(c => sums[l, c] / count).ToList()).ToList();
        return new PatchingGrid
        {
            Metric = batch.MetricName,
            Direction = direction == PatchDirection.Denoise ? "denoise" : "noise",
            Hook = Name(hook),
            Layers = layers,
            Positions = labels,
            Raw = raw,
            Values = raw.Select(r => (IReadOnlyList<double?>)r.Select(v => degenerate ? null : (double?)((v - mk) / denominator)).ToList()).ToList(),
            Clean = mc,
            Corrupted = mk,
            Pairs = count,
            Dropped = batch.Dropped + batch.DroppedIdentical,
            Warning = degenerate ? "the mean metric is the same on clean and corrupted prompts: normalised values are undefined (null); read raw" : null,
        };
    }

    /// <summary>Column labels and, per column, the [n, T] mask of patched positions for rows [start, start+n) (null: every position).</summary>
    private (List<string> Labels, List<Func<int, int, Tensor>?> Masks) Columns(CounterfactualBatch batch, ITextTokenizer tokenizer, PatchHook hook, PatchPositions positions)
    {
        if (hook == PatchHook.Z)
        {
            var heads = model.Config.NHeads;
            return (Enumerable.Range(0, heads).Select(h => $"h{h}").ToList(), Enumerable.Repeat<Func<int, int, Tensor>?>(null, heads).ToList());
        }
        if (positions == PatchPositions.Spans)
        {
            if (batch.Spans is null)
            {
                throw new ActivityException("positions: spans needs rows with \"spans\" and \"length\" (apply a schema with schema.generate), or use positions: all");
            }
            var spans = batch.Spans;
            return (batch.SpanTitles.ToList(), batch.SpanTitles.Select((_, s) => (Func<int, int, Tensor>?)((start, n) => spans[TensorIndex.Slice(start, start + n), s].gt(Scalars.Of(0.5)))).ToList<Func<int, int, Tensor>?>());
        }
        var lengths = batch.Last.Plus(Scalars.Int(1)).data<long>().Distinct().ToList();
        if (lengths.Count != 1)
        {
            throw new ActivityException($"positions: all needs prompts of one length, so that a column means one position; these have {string.Join(", ", lengths.Order())} tokens. Apply a schema (schema.generate) and use positions: spans");
        }
        var width = (int)lengths[0];
        var first = batch.Clean[0].data<long>().Take(width).Select(id => tokenizer.Decode([(int)id])).ToList();
        var labels = first.Select((tok, t) => $"{Clip(tok)}_{t}").ToList();
        var total = batch.Clean.shape[1];
        return (labels, Enumerable.Range(0, width).Select(t => (Func<int, int, Tensor>?)((start, n) =>
            Scalars.Range(total, device: batch.Clean.device).eq(Scalars.Int(t)).unsqueeze(0).expand(n, total))).ToList<Func<int, int, Tensor>?>());
    }

    private static string Clip(string token)
    {
        var t = token.Replace("\n", "\\n", StringComparison.Ordinal).Trim();
        return t.Length == 0 ? "␣" : t.Length > 10 ? t[..10] : t;
    }
}
