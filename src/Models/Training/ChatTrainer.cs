using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Training;

/// <summary>One supervised chat example: the prompt (template applied, prefill included) and what the model should write.</summary>
public sealed record ChatExample(string Prompt, string Completion);

/// <summary>What to train: a small GPT-2-style model, as for the toy tasks, with a longer context.</summary>
public sealed record ChatTrainingOptions
{
    public int Steps { get; init; } = 1500;
    public int BatchSize { get; init; } = 32;
    public double LearningRate { get; init; } = 3e-3;
    public double WeightDecay { get; init; } = 0.01;
    public int WarmupSteps { get; init; } = 50;
    public double FinalLearningRateFraction { get; init; } = 0.1;
    public long Seed { get; init; }
    public int DModel { get; init; } = 96;
    public int NLayers { get; init; } = 2;
    public int NHeads { get; init; } = 4;
    public int DMlp { get; init; } = 384;
    public int NCtx { get; init; } = 128;
    public int SaveStateEvery { get; init; } = 100;
    /// <summary>gpt2 (learned positions, the default) or llama (rotary positions, RMSNorm, SwiGLU).</summary>
    public string Architecture { get; init; } = "gpt2";
}

/// <summary>
/// Trains a small causal LM on chat examples: the loss is next-token cross-entropy on the completion and its closing
/// EOS only (the prompt is context). Prompts get BOS as <see cref="Generation.TextGenerator"/> gives it, so generation
/// sees what training saw. Batches are a function of (seed, step); resumable like <see cref="ToyTrainer"/>.
/// </summary>
public static class ChatTrainer
{
    public static TransformerConfig ModelConfig(ChatTrainingOptions o, int vocabulary, WordLevelTokenizer tokenizer) => o.Architecture == "llama" ? new()
    {
        Architecture = "llama", DModel = o.DModel, NLayers = o.NLayers, NHeads = o.NHeads, NKvHeads = o.NHeads, DMlp = o.DMlp,
        DVocab = vocabulary, NCtx = o.NCtx, Norm = NormKind.RmsNorm, NormBias = false, Positional = PositionalKind.Rotary, RotaryBase = 10000,
        Act = Activation.Silu, GatedMlp = true, QkvBias = false, AttnOutBias = false, MlpBias = false, NormEps = 1e-5, TiedEmbeddings = false,
        BosTokenId = tokenizer.BosId, EosTokenId = tokenizer.EosId, PadTokenId = tokenizer.PadId,
    } : new()
    {
        Architecture = "gpt2", DModel = o.DModel, NLayers = o.NLayers, NHeads = o.NHeads, DMlp = o.DMlp,
        DVocab = vocabulary, NCtx = o.NCtx, Act = Activation.GeluNew, TiedEmbeddings = false,
        BosTokenId = tokenizer.BosId, EosTokenId = tokenizer.EosId, PadTokenId = tokenizer.PadId,
    };

    /// <summary>Trains and saves the model and its tokenizer (an HF checkpoint). Returns the final loss.</summary>
    public static double Train(ChatTrainingOptions o, WordLevelTokenizer tokenizer, IEnumerable<string> specialTokens,
        Func<int, IReadOnlyList<ChatExample>> batchAt, string modelDirectory, Action<int, double>? progress = null,
        CancellationToken ct = default, string? resumeDirectory = null)
    {
        TorchRuntime.EnsureLoaded();
        var saved = resumeDirectory is null ? null : TrainingState.TryRead(resumeDirectory);
        using var model = saved is null
            ? new HookedTransformer(ModelConfig(o, tokenizer.Vocabulary.Count, tokenizer)).InitWeights(o.Seed)
            : Checkpoint.Load(saved.Directory);
        var schedule = new ToyTrainingOptions
        {
            Steps = o.Steps, LearningRate = o.LearningRate, WeightDecay = o.WeightDecay, WarmupSteps = o.WarmupSteps, FinalLearningRateFraction = o.FinalLearningRateFraction,
        };
        var loss = TrainingLoop.Run(model, saved, schedule, o.SaveStateEvery, (step, device) =>
        {
            var (tokens, targets) = Encode(tokenizer, batchAt(step), o.NCtx);
            var logits = model.Forward(tokens.to(device));
            return F.cross_entropy(logits.reshape(-1, logits.shape[2]), targets.to(device).reshape(-1), ignore_index: -100);
        }, progress, null, resumeDirectory, ct);
        Checkpoint.Save(model, modelDirectory);
        tokenizer.Save(Path.Combine(modelDirectory, "tokenizer.json"), specialTokens);
        return loss;
    }

    /// <summary>[BOS] prompt completion [EOS], right-padded; targets are -100 except where the next token is the completion's.</summary>
    public static (Tensor Tokens, Tensor Targets) Encode(ITextTokenizer tokenizer, IReadOnlyList<ChatExample> batch, int nCtx)
    {
        var rows = new List<(List<int> Ids, int PromptLength)>();
        foreach (var e in batch)
        {
            var prompt = new List<int>();
            if (tokenizer.BosId is { } bos)
            {
                prompt.Add(bos);
            }
            prompt.AddRange(tokenizer.Encode(e.Prompt));
            var ids = prompt.Concat(tokenizer.Encode(e.Completion)).ToList();
            if (tokenizer.EosId is { } eos)
            {
                ids.Add(eos);
            }
            if (ids.Count > nCtx)
            {
                throw new ArgumentException($"a training example has {ids.Count} tokens, beyond the context of {nCtx}");
            }
            rows.Add((ids, prompt.Count));
        }
        var width = rows.Max(r => r.Ids.Count);
        var pad = tokenizer.PadId ?? 0;
        var tokens = new long[rows.Count, width];
        var targets = new long[rows.Count, width];
        for (var b = 0; b < rows.Count; b++)
        {
            var (ids, promptLength) = rows[b];
            for (var t = 0; t < width; t++)
            {
                tokens[b, t] = t < ids.Count ? ids[t] : pad;
                targets[b, t] = t + 1 < ids.Count && t + 1 >= promptLength ? ids[t + 1] : -100;
            }
        }
        return (tensor(tokens), tensor(targets));
    }
}
