using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Erasure;

/// <summary>
/// Two MCQ scorers. <see cref="Predict"/> is ELM's: after the prompt (question, lettered options, "answer :"), the
/// answer is the option letter with the highest next-token logit among A, B, C and D. <see cref="PredictByLikelihood"/>
/// is lm-eval's multiple-choice rule on the options' text: the option whose tokens have the highest total
/// log-probability after the question. Both batch with right padding and read each row at its own positions.
/// </summary>
public static class McqScorer
{
    public sealed record Result(int Correct, int Total)
    {
        public double Accuracy => Total == 0 ? 0 : (double)Correct / Total;
    }

    /// <summary>The predicted option (0-3) of each question, for prompts built by <paramref name="prompt"/>.</summary>
    public static int[] Predict(HookedTransformer model, ITextTokenizer tokenizer, IReadOnlyList<ConceptMcq> questions, Func<ConceptMcq, string>? prompt = null, int batchSize = 64)
    {
        prompt ??= q => q.Prompt;
        var letters = ConceptMcq.Letters.Select(l => tokenizer.TokenToId(l) ?? throw new InvalidOperationException($"the tokenizer has no token for \"{l}\"")).ToArray();
        var device = model.W_E.device;
        var predictions = new int[questions.Count];
        using var _ = no_grad();
        for (var start = 0; start < questions.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = questions.Skip(start).Take(batchSize).Select(q =>
            {
                var ids = new List<int>();
                if (tokenizer.BosId is { } bos)
                {
                    ids.Add(bos);
                }
                ids.AddRange(tokenizer.Encode(prompt(q)));
                return ids;
            }).ToList();
            var logits = model.Forward(RightPadded(rows).to(device));
            var last = tensor(rows.Select(r => (long)r.Count - 1).ToArray()).to(device);
            var at = logits[Scalars.Range(rows.Count, device: device), last]; // [B, V]
            var options = at.index_select(1, tensor(letters.Select(l => (long)l).ToArray()).to(device));
            var best = options.argmax(1).cpu().data<long>().ToArray();
            for (var b = 0; b < rows.Count; b++)
            {
                predictions[start + b] = (int)best[b];
            }
        }
        return predictions;
    }

    /// <summary>The option (0-3) whose text is most likely after <paramref name="prompt"/>(q), summed over its tokens.</summary>
    public static int[] PredictByLikelihood(HookedTransformer model, ITextTokenizer tokenizer, IReadOnlyList<ConceptMcq> questions, Func<ConceptMcq, string> prompt, int batchSize = 16)
    {
        var device = model.W_E.device;
        var predictions = new int[questions.Count];
        using var _ = no_grad();
        for (var start = 0; start < questions.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = new List<(List<int> Ids, int From)>();
            foreach (var q in questions.Skip(start).Take(batchSize))
            {
                var context = new List<int>();
                if (tokenizer.BosId is { } bos)
                {
                    context.Add(bos);
                }
                context.AddRange(tokenizer.Encode(prompt(q)));
                foreach (var choice in q.Choices)
                {
                    rows.Add((context.Concat(tokenizer.Encode(" " + choice)).ToList(), context.Count));
                }
            }
            var logp = nn.functional.log_softmax(model.Forward(RightPadded(rows.Select(r => r.Ids).ToList()).to(device)), -1).cpu();
            var scores = rows.Select((r, b) => Enumerable.Range(r.From, r.Ids.Count - r.From).Sum(t => (double)logp[b, t - 1, r.Ids[t]].item<float>())).ToArray();
            for (var k = 0; k < scores.Length / 4; k++)
            {
                predictions[start + k] = Enumerable.Range(0, 4).MaxBy(o => scores[4 * k + o]);
            }
        }
        return predictions;
    }

    /// <summary>Rows of ids, right-padded with 0: causal attention keeps every position before the padding exact.</summary>
    private static Tensor RightPadded(IReadOnlyList<List<int>> rows)
    {
        var tokens = new long[rows.Count, rows.Max(r => r.Count)];
        for (var b = 0; b < rows.Count; b++)
        {
            for (var t = 0; t < rows[b].Count; t++)
            {
                tokens[b, t] = rows[b][t];
            }
        }
        return tensor(tokens);
    }

    public static Result ScoreByLikelihood(HookedTransformer model, ITextTokenizer tokenizer, IReadOnlyList<ConceptMcq> questions, Func<ConceptMcq, string> prompt)
    {
        var predicted = PredictByLikelihood(model, tokenizer, questions, prompt);
        return new Result(questions.Where((q, i) => predicted[i] == q.Answer).Count(), questions.Count);
    }

    public static Result Score(HookedTransformer model, ITextTokenizer tokenizer, IReadOnlyList<ConceptMcq> questions, Func<ConceptMcq, string>? prompt = null)
    {
        var predicted = Predict(model, tokenizer, questions, prompt);
        return new Result(questions.Where((q, i) => predicted[i] == q.Answer).Count(), questions.Count);
    }
}
