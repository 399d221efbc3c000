using Pipelines.Models.Generation;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Activities.Erasure;

/// <summary>
/// What every probe does with a model: encode prompts as generation does, answer open questions (greedy or sampled,
/// under whatever hooks are attached), score the options' likelihood, read continuation NLLs and layer activations.
/// </summary>
public sealed class ProbeKit(HookedTransformer model, ITextTokenizer tokenizer)
{
    public HookedTransformer Model => model;
    public ITextTokenizer Tokenizer => tokenizer;

    /// <summary>Prompt ids as <see cref="TextGenerator"/> feeds them (BOS first where the model prepends it).</summary>
    public List<int> Ids(string text)
    {
        var ids = new List<int>();
        if (tokenizer.BosId is { } bos && (model.Config.DefaultPrependBos || tokenizer.Kind == "wordlevel"))
        {
            ids.Add(bos);
        }
        ids.AddRange(tokenizer.Encode(text));
        return ids;
    }

    public static readonly GenerationOptions Greedy = new() { MaxNewTokens = 6, Temperature = 0 };

    /// <summary>Continuations of id prompts (batched by <see cref="TextGenerator"/>: left padding, KV cache).</summary>
    public List<List<int>> Continue(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options, int batchSize = 64)
    {
        var all = new List<List<int>>();
        var generator = new TextGenerator(model, tokenizer);
        for (var start = 0; start < prompts.Count; start += batchSize)
        {
            var chunk = prompts.Skip(start).Take(batchSize).ToList();
            all.AddRange(generator.GenerateTokens(chunk, options with { Seed = options.Seed + start }).Select(Trim));
        }
        return all;
    }

    private List<int> Trim(List<int> ids)
    {
        var eos = ids.IndexOf(tokenizer.EosId ?? -1);
        return eos >= 0 ? ids[..eos] : ids;
    }

    /// <summary>What the model answers to each question's prompt (decoded text).</summary>
    public string[] Answers(IReadOnlyList<ConceptMcq> questions, Func<ConceptMcq, string> prompt, GenerationOptions? options = null) =>
        Continue(questions.Select(q => (IReadOnlyList<int>)Ids(prompt(q))).ToList(), options ?? Greedy).Select(tokenizer.Decode).ToArray();

    /// <summary>Whether each answer names the right option before any other (open completion, scored as exact recall).</summary>
    public bool[] Open(IReadOnlyList<ConceptMcq> questions, Func<ConceptMcq, string> prompt, GenerationOptions? options = null)
    {
        var answers = Answers(questions, prompt, options);
        return questions.Select((q, i) => Names(answers[i], q)).ToArray();
    }

    /// <summary>True when the first option the text mentions (as whole words) is the question's answer.</summary>
    public static bool Names(string text, ConceptMcq q)
    {
        var lower = " " + Normalise(text) + " ";
        var first = Enumerable.Range(0, q.Choices.Count)
            .Select(i => (i, at: lower.IndexOf(" " + Normalise(q.Choices[i]) + " ", StringComparison.Ordinal)))
            .Where(p => p.at >= 0).OrderBy(p => p.at).ThenByDescending(p => q.Choices[p.i].Length).FirstOrDefault((-1, -1));
        return first.Item1 == q.Answer;
    }

    /// <summary>Lower case, punctuation spaced, whitespace collapsed: so "Grey." and "grey ." compare equal.</summary>
    public static string Normalise(string text)
    {
        var spaced = new System.Text.StringBuilder(text.Length + 8);
        foreach (var c in text.ToLowerInvariant())
        {
            if (char.IsPunctuation(c))
            {
                spaced.Append(' ').Append(c).Append(' ');
            }
            else
            {
                spaced.Append(char.IsWhiteSpace(c) ? ' ' : c);
            }
        }
        return string.Join(' ', spaced.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries));
    }

    /// <summary>lm-eval's multiple-choice rule: the option with the highest summed log-likelihood after the prompt.</summary>
    public bool[] Mcq(IReadOnlyList<ConceptMcq> questions, Func<ConceptMcq, string> prompt)
    {
        var predicted = McqScorer.PredictByLikelihood(model, tokenizer, questions, prompt);
        return questions.Select((q, i) => predicted[i] == q.Answer).ToArray();
    }

    /// <summary>Mean NLL (nats per token) of each continuation after its context; an empty context scores the text from its second token.</summary>
    public double[] Nll(IReadOnlyList<ScoredText> items, int batchSize = 32)
    {
        var result = new double[items.Count];
        using var _ = no_grad();
        for (var start = 0; start < items.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = items.Skip(start).Take(batchSize).Select(item =>
            {
                if (item.Context.Length == 0)
                {
                    var ids = Ids(item.Continuation);
                    return (Ids: Clip(ids), From: 1);
                }
                var context = Ids(item.Context);
                return (Ids: Clip([.. context, .. tokenizer.Encode(" " + item.Continuation)]), From: context.Count);
            }).ToList();
            var logp = F.log_softmax(model.Forward(Padded(rows.Select(r => r.Ids).ToList())), -1);
            var targets = Padded(rows.Select(r => r.Ids.Skip(1).Append(0).ToList()).ToList()).to(logp.device);
            var picked = logp.gather(2, targets.unsqueeze(2)).squeeze(2).cpu().to(ScalarType.Float64);
            var values = picked.data<double>().ToArray();
            var width = (int)picked.shape[1];
            for (var b = 0; b < rows.Count; b++)
            {
                var (ids, from) = rows[b];
                var count = Math.Max(1, ids.Count - from);
                var sum = 0.0;
                for (var t = from; t < ids.Count; t++)
                {
                    sum -= values[b * width + t - 1];
                }
                result[start + b] = ids.Count > from ? sum / count : 0;
            }
        }
        return result;
    }

    private List<int> Clip(List<int> ids) => model.Config.Positional == PositionalKind.Learned && ids.Count > model.Config.NCtx ? ids[..model.Config.NCtx] : ids;

    /// <summary>Right-padded ids on the model's device.</summary>
    public Tensor Padded(IReadOnlyList<List<int>> rows, int pad = 0)
    {
        var width = rows.Max(r => r.Count);
        var data = new long[rows.Count, width];
        for (var b = 0; b < rows.Count; b++)
        {
            for (var t = 0; t < width; t++)
            {
                data[b, t] = t < rows[b].Count ? rows[b][t] : pad;
            }
        }
        return tensor(data, device: model.W_E.device);
    }

    /// <summary>
    /// Residual-stream features [N, L+1, D] at the last token of each text: index 0 is the embedding (resid_pre of
    /// layer 0), index l+1 the output of layer l. On the CPU, float32.
    /// </summary>
    public Tensor LastTokenResiduals(IReadOnlyList<string> texts, int batchSize = 32)
    {
        var parts = new List<Tensor>();
        var names = new List<string> { HookNames.ResidPre(0) };
        names.AddRange(Enumerable.Range(0, model.Config.NLayers).Select(HookNames.ResidPost));
        using var _ = no_grad();
        for (var start = 0; start < texts.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = texts.Skip(start).Take(batchSize).Select(t => Clip(Ids(t))).ToList();
            var (_, cache) = model.RunWithCache(Padded(rows), n => names.Contains(n));
            using (cache)
            {
                var last = tensor(rows.Select(r => (long)r.Count - 1).ToArray(), device: model.W_E.device);
                var index = Scalars.Range(rows.Count, device: model.W_E.device);
                var stacked = stack(names.Select(n => cache[n][index, last]).ToArray(), 1).to(ScalarType.Float32).cpu();
                parts.Add(stacked.MoveToOuterDisposeScope());
            }
        }
        var all = cat(parts, 0);
        foreach (var p in parts)
        {
            p.Dispose();
        }
        return all;
    }

    /// <summary>Mean L2 norm of the residual stream per layer output over every token of the texts.</summary>
    public double[] ResidualNorms(IReadOnlyList<string> texts, int batchSize = 32)
    {
        var sums = new double[model.Config.NLayers];
        long count = 0;
        using var _ = no_grad();
        for (var start = 0; start < texts.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = texts.Skip(start).Take(batchSize).Select(t => Clip(Ids(t))).ToList();
            var mask = Padded(rows.Select(r => r.Select(_ => 1).ToList()).ToList()).to(ScalarType.Float64);
            var (_, cache) = model.RunWithCache(Padded(rows), n => n.EndsWith("hook_resid_post", StringComparison.Ordinal));
            using (cache)
            {
                for (var l = 0; l < model.Config.NLayers; l++)
                {
                    sums[l] += (cache[HookNames.ResidPost(l)].to(ScalarType.Float64).norm(-1) * mask).sum().item<double>();
                }
            }
            count += rows.Sum(r => r.Count);
        }
        return sums.Select(s => s / Math.Max(1, count)).ToArray();
    }

    /// <summary>The residual stream's RMS per coordinate at a hook, over every token of the texts (the noise and steering scale).</summary>
    public double Rms(string hook, IReadOnlyList<string> texts)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var rows = texts.Take(32).Select(t => Clip(Ids(t))).ToList();
        var (_, cache) = model.RunWithCache(Padded(rows), n => n == hook);
        using (cache)
        {
            return cache[hook].to(ScalarType.Float64).pow(Scalars.Int(2)).mean().sqrt().item<double>();
        }
    }
}

/// <summary>Statistics the battery reports: percentile bootstrap intervals of a mean.</summary>
public static class ProbeStats
{
    public static (double Lo, double Hi) Bootstrap(IReadOnlyList<double> values, long seed, int resamples = 1000)
    {
        if (values.Count == 0)
        {
            return (double.NaN, double.NaN);
        }
        var random = new Pipelines.Models.Common.SeededRandom(seed);
        var means = new double[resamples];
        for (var r = 0; r < resamples; r++)
        {
            var sum = 0.0;
            for (var i = 0; i < values.Count; i++)
            {
                sum += values[random.Next(values.Count)];
            }
            means[r] = sum / values.Count;
        }
        Array.Sort(means);
        return (means[(int)(0.025 * resamples)], means[(int)(0.975 * resamples) - 1]);
    }

    public static double[] AsDoubles(this IEnumerable<bool> hits) => hits.Select(h => h ? 1.0 : 0.0).ToArray();
}

/// <summary>
/// A multinomial logistic-regression probe with L2, fitted by full-batch Adam on standardised features (the
/// standardisation is folded back, so <see cref="Direction"/> lives in the residual stream's own coordinates).
/// </summary>
public sealed class LinearProbe
{
    public required double TestAccuracy { get; init; }
    public required double TrainAccuracy { get; init; }
    /// <summary>For a two-class probe: the weight of class 1 minus class 0 in raw coordinates, unit norm.</summary>
    public required float[] Direction { get; init; }
    /// <summary>Weights in raw (unstandardised) coordinates, [classes, d] row-major: logits = W·x + b.</summary>
    public required float[] Weights { get; init; }
    public required float[] Bias { get; init; }
    /// <summary>The predicted class of each test row.</summary>
    public required long[] TestPredictions { get; init; }

    public static LinearProbe Fit(Tensor trainX, long[] trainY, Tensor testX, long[] testY, int classes, double l2 = 1e-3, int steps = 300, long seed = 0)
    {
        using var scope = NewDisposeScope();
        using var generator = new torch.Generator((ulong)seed);
        var mean = trainX.mean([0], keepdim: true);
        var std = trainX.std(0, keepdim: true).clamp_min(Scalars.Of(1e-6));
        var x = (trainX - mean) / std;
        var y = tensor(trainY);
        var w = new TorchSharp.Modules.Parameter(randn([trainX.shape[1], classes], generator: generator) * Scalars.Of(0.01), requires_grad: true);
        var b = new TorchSharp.Modules.Parameter(zeros(classes), requires_grad: true);
        using var optimizer = new StableAdamW([w, b], 0.05, weightDecay: 0);
        for (var s = 0; s < steps; s++)
        {
            using var step = NewDisposeScope();
            optimizer.zero_grad();
            var loss = F.cross_entropy(x.matmul(w).Plus(b), y).Plus(w.pow(Scalars.Int(2)).sum() * Scalars.Of(l2));
            loss.backward();
            optimizer.step();
        }
        using var _ = no_grad();
        long[] Predict(Tensor features) => features.shape[0] == 0 ? [] : ((features - mean) / std).matmul(w).Plus(b).argmax(1).data<long>().ToArray();
        double Accuracy(long[] predicted, long[] labels) => labels.Length == 0 ? double.NaN : predicted.Zip(labels).Count(p => p.First == p.Second) / (double)labels.Length;
        var raw = (w / std.t()).detach();
        var bias = (b - (mean / std).matmul(w).squeeze(0)).detach();
        var direction = classes == 2 ? raw[.., 1] - raw[.., 0] : raw[.., 0];
        direction = direction / direction.norm().clamp_min(Scalars.Of(1e-12));
        var test = Predict(testX);
        return new LinearProbe
        {
            TrainAccuracy = Accuracy(Predict(trainX), trainY),
            TestAccuracy = Accuracy(test, testY),
            Direction = direction.to(ScalarType.Float32).data<float>().ToArray(),
            Weights = raw.t().contiguous().to(ScalarType.Float32).data<float>().ToArray(),
            Bias = bias.to(ScalarType.Float32).data<float>().ToArray(),
            TestPredictions = test,
        };
    }
}
