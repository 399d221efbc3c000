using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Generation;

/// <summary>Sampling settings. Temperature 0 is greedy.</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 32;
    public double Temperature { get; init; }
    public int TopK { get; init; }
    public double TopP { get; init; } = 1.0;
    public long Seed { get; init; }
    public IReadOnlyList<string> StopSequences { get; init; } = [];
    /// <summary>Stop a sequence at the tokenizer's end-of-sequence id.</summary>
    public bool StopAtEos { get; init; } = true;
    public bool UseKvCache { get; init; } = true;
}

/// <summary>One generated continuation.</summary>
public sealed record Generated(string Prompt, string Text, IReadOnlyList<int> Tokens, string StopReason);

/// <summary>
/// Batched generation: prompts are left-padded to one length, prefilled in one forward, then decoded token by token
/// with a KV cache (or, for checking, with full forwards). Sampling runs on tensors: temperature, top-k, top-p.
/// </summary>
public sealed class TextGenerator(HookedTransformer model, ITextTokenizer tokenizer)
{
    /// <summary>Generates a continuation of each prompt (prompt text should already include any prefill).</summary>
    public IReadOnlyList<Generated> Generate(IReadOnlyList<string> prompts, GenerationOptions options)
    {
        var encoded = prompts.Select(p => Prefix(tokenizer.Encode(p))).ToList();
        var tokens = GenerateTokens(encoded, options);
        return prompts.Select((p, i) =>
        {
            var (ids, reason) = Trim(tokens[i], options);
            return new Generated(p, tokenizer.Decode(ids), ids, reason);
        }).ToList();
    }

    /// <summary>
    /// How many new tokens fit after the prompt in a model with learned positions (null: no fixed limit, as with
    /// rotary positions).
    /// </summary>
    public int? Room(string prompt) =>
        model.Config.Positional == PositionalKind.Learned ? model.Config.NCtx - Prefix(tokenizer.Encode(prompt)).Count : null;

    private IReadOnlyList<int> Prefix(IReadOnlyList<int> ids) =>
        model.Config.DefaultPrependBos && tokenizer.BosId is { } bos && (ids.Count == 0 || ids[0] != bos) ? [bos, .. ids] : ids;

    /// <summary>New token ids for each prompt (before stop trimming).</summary>
    public List<List<int>> GenerateTokens(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var device = model.W_E.device;
        var batch = prompts.Count;
        var width = prompts.Max(p => p.Count);
        if (model.Config.Positional == PositionalKind.Learned && width + options.MaxNewTokens > model.Config.NCtx)
        {
            throw new ArgumentException($"the prompt has {width} tokens and up to {options.MaxNewTokens} more are asked for, beyond the model's context of {model.Config.NCtx} positions");
        }
        var pad = tokenizer.PadId ?? tokenizer.EosId ?? 0;
        var ids = new long[batch, width];
        var mask = new long[batch, width];
        for (var b = 0; b < batch; b++)
        {
            var offset = width - prompts[b].Count;
            for (var t = 0; t < width; t++)
            {
                ids[b, t] = t < offset ? pad : prompts[b][t - offset];
                mask[b, t] = t < offset ? 0 : 1;
            }
        }
        var input = tensor(ids, device: device);
        var attention = tensor(mask, device: device);
        using var generator = new torch.Generator((ulong)options.Seed, device);
        using var cache = options.UseKvCache ? new KvCache(model.Config.NLayers) : null;
        var outputs = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToList();
        var done = new bool[batch];
        var all = input;
        var allMask = attention;
        Tensor next = input;
        Tensor nextMask = attention;
        for (var step = 0; step < options.MaxNewTokens && !done.All(d => d); step++)
        {
            using var stepScope = NewDisposeScope();
            var logits = cache is null ? model.Forward(all, allMask) : model.Forward(next, nextMask, cache);
            var chosen = Sample(logits[.., -1], options, generator);
            var values = chosen.data<long>().ToArray();
            for (var b = 0; b < batch; b++)
            {
                if (done[b])
                {
                    continue;
                }
                outputs[b].Add((int)values[b]);
                if ((options.StopAtEos && tokenizer.EosId == (int)values[b]) || HitsStop(outputs[b], options))
                {
                    done[b] = true;
                }
            }
            next = chosen.unsqueeze(1).MoveToOuterDisposeScope();
            nextMask = ones(batch, 1, dtype: ScalarType.Int64, device: device).MoveToOuterDisposeScope();
            if (cache is null)
            {
                all = cat([all, next], 1).MoveToOuterDisposeScope();
                allMask = cat([allMask, nextMask], 1).MoveToOuterDisposeScope();
            }
        }
        return outputs;
    }

    /// <summary>Picks the next token from last-position logits [B, V].</summary>
    public static Tensor Sample(Tensor logits, GenerationOptions options, torch.Generator generator)
    {
        if (options.Temperature <= 0)
        {
            return logits.argmax(-1);
        }
        var scaled = logits.to(ScalarType.Float32).div(Scalars.Of(options.Temperature));
        if (options.TopK > 0 && options.TopK < scaled.shape[1])
        {
            var kth = scaled.topk(options.TopK, -1).values.narrow(-1, options.TopK - 1, 1);
            scaled = scaled.masked_fill(scaled.lt(kth), Scalars.Of(double.NegativeInfinity));
        }
        if (options.TopP < 1.0)
        {
            var (sorted, order) = scaled.sort(-1, descending: true);
            var cumulative = sorted.softmax(-1).cumsum(-1);
            // Drop a token when the mass before it already reaches top-p (the first token always stays).
            var drop = (cumulative - sorted.softmax(-1)).ge(Scalars.Of(options.TopP));
            var dropped = zeros_like(drop).scatter(-1, order, drop);
            scaled = scaled.masked_fill(dropped, Scalars.Of(double.NegativeInfinity));
        }
        return multinomial(scaled.softmax(-1), 1, generator: generator).squeeze(-1);
    }

    private bool HitsStop(List<int> ids, GenerationOptions options) =>
        options.StopSequences.Count > 0 && options.StopSequences.Any(s => tokenizer.Decode(ids).Contains(s, StringComparison.Ordinal));

    private (List<int> Ids, string Reason) Trim(List<int> ids, GenerationOptions options)
    {
        if (options.StopAtEos && tokenizer.EosId is { } eos && ids.IndexOf(eos) is var at and >= 0)
        {
            return (ids[..at], "eos");
        }
        foreach (var stop in options.StopSequences)
        {
            for (var n = 1; n <= ids.Count; n++)
            {
                if (tokenizer.Decode(ids[..n]).Contains(stop, StringComparison.Ordinal))
                {
                    return (ids[..n], "stop sequence");
                }
            }
        }
        return (ids, ids.Count >= options.MaxNewTokens ? "max tokens" : "end");
    }
}
