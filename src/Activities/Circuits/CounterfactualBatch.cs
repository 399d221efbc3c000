using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Activities.Circuits;

/// <summary>
/// Counterfactual pairs as tensors: clean and corrupted ids [N, T] (BOS-prefixed when the model expects it,
/// right-padded), the mask of real tokens, each row's last real position, and the answers. Pairs whose clean and
/// corrupted prompts tokenize to different lengths are dropped and counted, as MIB does.
/// </summary>
public sealed class CounterfactualBatch : IDisposable
{
    private CounterfactualBatch(Tensor clean, Tensor corrupted, Tensor mask, Tensor last, Tensor correct, Tensor incorrect, int[]? labels, int dropped, long[]? years)
    {
        Clean = clean;
        Corrupted = corrupted;
        Mask = mask;
        Last = last;
        Correct = correct;
        Incorrect = incorrect;
        Labels = labels;
        Dropped = dropped;
        _years = years;
    }

    private readonly long[]? _years;

    /// <summary>Span titles when the rows carry a schema application ("spans", "length"), else empty.</summary>
    public IReadOnlyList<string> SpanTitles { get; private set; } = [];

    /// <summary>[N, S, T] float: 1 where position t of row n lies in span s (BOS and padding in none); null without spans.</summary>
    public Tensor? Spans { get; private set; }

    public Tensor Clean { get; }
    public Tensor Corrupted { get; }
    public Tensor Mask { get; }
    public Tensor Last { get; }
    public Tensor Correct { get; }
    public Tensor Incorrect { get; }
    /// <summary>Greater-than rows: the start year YY; the metric is then the probability difference.</summary>
    public int[]? Labels { get; }
    public int Dropped { get; }

    /// <summary>Pairs dropped because clean and corrupted tokenize to the same ids (no counterfactual signal).</summary>
    public int DroppedIdentical { get; private init; }
    public int Count => (int)Clean.shape[0];

    public string MetricName => Labels is null ? "logit difference" : "probability difference";

    /// <summary>Reads rows with "clean", "corrupted" and either "correct"/"incorrect" answer words or a two-digit "label".</summary>
    public static CounterfactualBatch FromRows(IReadOnlyList<JsonObject> rows, ITextTokenizer tokenizer, TransformerConfig config, int limit = 0)
    {
        var cleanIds = new List<List<int>>();
        var corruptIds = new List<List<int>>();
        var correct = new List<long>();
        var incorrect = new List<long>();
        var labels = new List<int>();
        var dropped = 0;
        var spanRows = new List<Pipelines.Activities.Schemas.SpanApplication>();
        IReadOnlyList<string>? titles = null;
        var prefix = config.DefaultPrependBos && tokenizer.BosId is { } bos ? new List<int> { bos } : [];
        int Token(string word, int row) => Model.VocabularyCheck.AnswerToken(tokenizer, word, $"dataset, row {row + 1}");
        var texts = new List<string>();
        var seen = new List<IReadOnlyList<int>>(); // every prompt read, kept or dropped: the unknown-token share is over all of them
        var identical = 0;
        for (var i = 0; i < rows.Count && (limit <= 0 || cleanIds.Count < limit); i++)
        {
            var row = rows[i];
            string Field(string name) => row[name] is JsonValue v && v.TryGetValue<string>(out var s) ? s
                : throw new ActivityException($"dataset, row {i + 1}: expected a string field \"{name}\"");
            var c = prefix.Concat(tokenizer.Encode(Field("clean"))).ToList();
            var k = prefix.Concat(tokenizer.Encode(Field("corrupted"))).ToList();
            seen.Add(c);
            seen.Add(k);
            texts.Add(Field("clean"));
            texts.Add(Field("corrupted"));
            if (c.Count != k.Count)
            {
                dropped++;
                continue;
            }
            if (c.SequenceEqual(k))
            {
                identical++; // clean and corrupted read the same to this tokenizer: the pair carries no signal
                continue;
            }
            if (Pipelines.Activities.Schemas.SpanApplication.ReadFrom(row, $"dataset, row {i + 1}") is { } app)
            {
                var rowTitles = Pipelines.Activities.Schemas.SpanApplication.Titles(row);
                titles ??= rowTitles;
                if (!titles.SequenceEqual(rowTitles))
                {
                    throw new ActivityException($"dataset, row {i + 1}: its spans ({string.Join(", ", rowTitles)}) differ from the first row's ({string.Join(", ", titles)}); one schema per dataset");
                }
                if (app.Length != c.Count)
                {
                    throw new ActivityException($"dataset, row {i + 1}: the spans were made for {app.Length} tokens, but this model's tokenizer gives {c.Count}; apply the schema with this model (schema.generate)");
                }
                spanRows.Add(app);
            }
            else if (titles is not null)
            {
                throw new ActivityException($"dataset, row {i + 1}: no \"spans\", but earlier rows have them");
            }
            cleanIds.Add(c);
            corruptIds.Add(k);
            if (row["label"] is JsonValue label)
            {
                labels.Add(label.TryGetValue<int>(out var yy) ? yy : int.Parse(label.ToString(), System.Globalization.CultureInfo.InvariantCulture));
                correct.Add(0);
                incorrect.Add(0);
            }
            else if (row["correct_idx"] is JsonValue good && row["incorrect_idx"] is JsonValue bad)
            {
                // EAP-IG's IOI files give the answers as token ids of the model they were made for.
                correct.Add(good.GetValue<long>());
                incorrect.Add(bad.GetValue<long>());
            }
            else
            {
                correct.Add(Token(Field("correct"), i));
                incorrect.Add(Token(Field("incorrect"), i));
            }
        }
        Model.VocabularyCheck.Check(tokenizer, seen, texts, "dataset");
        if (cleanIds.Count == 0)
        {
            throw new ActivityException($"no usable pairs: {dropped} dropped because clean and corrupted prompts tokenize to different lengths, " +
                $"{identical} because they tokenize identically");
        }
        if (labels.Count != 0 && labels.Count != cleanIds.Count)
        {
            throw new ActivityException("the dataset mixes rows with \"label\" (greater-than) and rows with \"correct\"/\"incorrect\"");
        }
        if (correct.Concat(incorrect).FirstOrDefault(id => id < 0 || id >= config.DVocab) is var outside && outside != 0 && (outside < 0 || outside >= config.DVocab))
        {
            throw new ActivityException($"answer token id {outside} is outside this model's vocabulary (0..{config.DVocab - 1}): the dataset's ids were made for another tokenizer");
        }
        long[]? years = null;
        if (labels.Count > 0)
        {
            years = Enumerable.Range(0, 100).Select(y => (long)Token(y.ToString("00", System.Globalization.CultureInfo.InvariantCulture), 0)).ToArray();
        }
        var width = cleanIds.Max(r => r.Count);
        var pad = tokenizer.PadId ?? tokenizer.EosId ?? 0;
        long[,] Pack(List<List<int>> rows2)
        {
            var a = new long[rows2.Count, width];
            for (var r = 0; r < rows2.Count; r++)
            {
                for (var t = 0; t < width; t++)
                {
                    a[r, t] = t < rows2[r].Count ? rows2[r][t] : pad;
                }
            }
            return a;
        }
        var mask = new long[cleanIds.Count, width];
        for (var r = 0; r < cleanIds.Count; r++)
        {
            for (var t = 0; t < cleanIds[r].Count; t++)
            {
                mask[r, t] = 1;
            }
        }
        var device = TorchRuntime.ComputeDevice; // where the models are: the runtime's one compute device
        var result = new CounterfactualBatch(tensor(Pack(cleanIds), device: device), tensor(Pack(corruptIds), device: device), tensor(mask, device: device),
            tensor(cleanIds.Select(r => (long)r.Count - 1).ToArray(), device: device), tensor(correct.ToArray(), device: device), tensor(incorrect.ToArray(), device: device),
            labels.Count > 0 ? labels.ToArray() : null, dropped, years) { DroppedIdentical = identical };
        if (titles is not null)
        {
            var spans = new float[spanRows.Count, titles.Count, width];
            for (var r = 0; r < spanRows.Count; r++)
            {
                for (var sp = 0; sp < titles.Count; sp++)
                {
                    for (var t = spanRows[r].Starts[sp]; t < spanRows[r].End(sp); t++)
                    {
                        spans[r, sp, t] = 1;
                    }
                }
            }
            result.SpanTitles = titles;
            result.Spans = tensor(spans, device: device);
        }
        return result;
    }

    /// <summary>
    /// The batches every pass over the pairs walks: (start, count) of at most <paramref name="size"/> pairs each, with
    /// cancellation checked before each one. The one batching loop of attribution, ablation means and faithfulness.
    /// </summary>
    public IEnumerable<(int Start, int Count)> Batches(int size, CancellationToken ct = default)
    {
        for (var start = 0; start < Count; start += size)
        {
            ct.ThrowIfCancellationRequested();
            yield return (start, Math.Min(size, Count - start));
        }
    }

    /// <summary>A slice of the batch (rows [start, start+count)) with its own tensors.</summary>
    public (Tensor Clean, Tensor Corrupted, Tensor Mask, Func<Tensor, Tensor> PerExample) Slice(int start, int count)
    {
        var range = TensorIndex.Slice(start, start + count);
        var last = Last[range];
        var correct = Correct[range];
        var incorrect = Incorrect[range];
        var labels = Labels?[start..(start + count)];
        var years = _years;
        Tensor PerExample(Tensor logits)
        {
            if (labels is null || years is null)
            {
                return CircuitRun.LogitDifference(logits, last, correct, incorrect);
            }
            var rows = Scalars.Range(logits.shape[0], device: logits.device);
            var probs = F.softmax(logits[rows, last], -1).index_select(1, tensor(years, device: logits.device)); // [n, 100]
            var above = Scalars.Range(100, device: logits.device).unsqueeze(0).gt(tensor(labels.Select(l => (long)l).ToArray(), device: logits.device).unsqueeze(1));
            return where(above, probs, probs.neg()).sum(-1);
        }
        return (Clean[range], Corrupted[range], Mask[range], PerExample);
    }

    /// <summary>
    /// Gives every real position after BOS its own span ("p1", "p2", ...): per-position scores. All rows must have the
    /// same length, so that positions mean the same thing across examples.
    /// </summary>
    public void UsePositionsAsSpans(int first)
    {
        var lengths = Last.Plus(Scalars.Int(1)).data<long>().Distinct().ToList();
        if (lengths.Count != 1)
        {
            throw new ActivityException($"per-position scores need examples of one length; these have {string.Join(", ", lengths.Order())} tokens. Apply a schema (schema.generate) and use positional: spans");
        }
        var width = (int)lengths[0];
        var spans = zeros(Count, width - first, Clean.shape[1], device: Clean.device);
        for (var p = first; p < width; p++)
        {
            spans[.., p - first, p] = tensor(1f);
        }
        SpanTitles = Enumerable.Range(first, width - first).Select(p => $"p{p}").ToList();
        Spans?.Dispose();
        Spans = spans;
    }

    /// <summary>Rows [start, start+count) of <see cref="Spans"/>.</summary>
    public Tensor SpanSlice(int start, int count) =>
        Spans?[TensorIndex.Slice(start, start + count)] ?? throw new InvalidOperationException("the dataset has no spans");

    public void Dispose()
    {
        Spans?.Dispose();
        Clean.Dispose();
        Corrupted.Dispose();
        Mask.Dispose();
        Last.Dispose();
        Correct.Dispose();
        Incorrect.Dispose();
    }
}
