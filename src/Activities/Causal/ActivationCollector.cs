using Pipelines.Engine.Activities;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Causal;

/// <summary>
/// Tokenizes prompts as the model expects (BOS when it prepends one) and reads activations at one hook family over
/// layers and positions. A position p ≥ 0 counts from the start (BOS is 0), p &lt; 0 from the end (−1 = the last token).
/// </summary>
public sealed class ActivationCollector(HookedTransformer model, ITextTokenizer tokenizer)
{
    public IReadOnlyList<int> Ids(string text)
    {
        var prefix = model.Config.DefaultPrependBos && tokenizer.BosId is { } bos ? new[] { bos } : [];
        var ids = prefix.Concat(tokenizer.Encode(text)).ToList();
        return ids.Count <= model.Config.NCtx ? ids : ids[^model.Config.NCtx..];
    }

    /// <summary>The ids of an answer continuing a prompt (no BOS): what greedy decoding should write.</summary>
    public IReadOnlyList<int> Continuation(string text) => tokenizer.Encode(text).ToList();

    /// <summary>Decodes generated ids.</summary>
    public string Decode(IEnumerable<int> ids) => tokenizer.Decode(ids);

    /// <summary>The absolute index of <paramref name="position"/> in a row of <paramref name="length"/> tokens, or null when outside.</summary>
    public static int? Resolve(int position, int length)
    {
        var p = position < 0 ? length + position : position;
        return p >= 0 && p < length ? p : null;
    }

    public static string Label(int position) => position == -1 ? "last" : position < 0 ? $"last{position + 1}" : $"p{position}";

    /// <summary>Right-padded ids and mask [N, T] on the compute device.</summary>
    public (Tensor Ids, Tensor Mask) Pack(IReadOnlyList<IReadOnlyList<int>> rows)
    {
        var width = rows.Max(r => r.Count);
        var pad = tokenizer.PadId ?? tokenizer.EosId ?? 0;
        var ids = new long[rows.Count, width];
        var mask = new long[rows.Count, width];
        for (var r = 0; r < rows.Count; r++)
        {
            for (var t = 0; t < width; t++)
            {
                ids[r, t] = t < rows[r].Count ? rows[r][t] : pad;
                mask[r, t] = t < rows[r].Count ? 1 : 0;
            }
        }
        return (tensor(ids, device: TorchRuntime.ComputeDevice), tensor(mask, device: TorchRuntime.ComputeDevice));
    }

    /// <summary>Activations [N, layers, positions, d] (f32, CPU) at the hook family.</summary>
    public Tensor Collect(IReadOnlyList<IReadOnlyList<int>> rows, PatchHook hook, IReadOnlyList<int> layers, IReadOnlyList<int> positions, int batchSize = 32,
        Action<double, string>? progress = null, CancellationToken ct = default)
    {
        if (hook == PatchHook.Z)
        {
            throw new ActivityException("inputs.hook: probes and steering read whole vectors; use resid-pre, resid-post, attn-out or mlp-out");
        }
        var names = layers.Select(l => PatchingSweep.HookName(hook, l)).ToList();
        var parts = new List<Tensor>();
        using var noGrad = no_grad();
        for (var start = 0; start < rows.Count; start += batchSize)
        {
            ct.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            var chunk = rows.Skip(start).Take(batchSize).ToList();
            var index = new long[chunk.Count, positions.Count];
            for (var r = 0; r < chunk.Count; r++)
            {
                for (var p = 0; p < positions.Count; p++)
                {
                    index[r, p] = Resolve(positions[p], chunk[r].Count)
                        ?? throw new ActivityException($"dataset, row {start + r + 1}: position {positions[p]} is outside its {chunk[r].Count} tokens");
                }
            }
            var (ids, mask) = Pack(chunk);
            var (_, cache) = model.RunWithCache(ids, names.Contains, mask);
            using (cache)
            {
                var at = tensor(index, device: ids.device); // [n, P]
                var rowsIndex = Scalars.Range(chunk.Count, device: ids.device).unsqueeze(1).expand(chunk.Count, positions.Count);
                var stacked = stack(names.Select(n => cache[n][rowsIndex, at]).ToArray(), 1); // [n, L, P, d]
                parts.Add(stacked.to(ScalarType.Float32).cpu().MoveToOuterDisposeScope());
            }
            progress?.Invoke((double)Math.Min(rows.Count, start + batchSize) / rows.Count, $"activations of {Math.Min(rows.Count, start + batchSize)} of {rows.Count} prompts");
        }
        var all = cat(parts, 0);
        foreach (var p in parts)
        {
            p.Dispose();
        }
        return all;
    }
}
