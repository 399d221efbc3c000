using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Models.Training;

/// <summary>What to train. The defaults reach high accuracy on both tasks in well under a minute on 2 cores.</summary>
public sealed record ToyTrainingOptions
{
    public string Task { get; init; } = "ioi";
    public int Steps { get; init; } = 800;
    public int BatchSize { get; init; } = 64;
    public double LearningRate { get; init; } = 4e-3;
    public double WeightDecay { get; init; } = 0.01;
    /// <summary>Linear warm-up steps before the peak learning rate; then a cosine decay to <see cref="FinalLearningRateFraction"/> of it.</summary>
    public int WarmupSteps { get; init; } = 50;
    public double FinalLearningRateFraction { get; init; } = 0.1;
    public long Seed { get; init; }
    /// <summary>Save an intermediate HF checkpoint every N steps (0: none).</summary>
    public int CheckpointEvery { get; init; }
    public int DModel { get; init; } = 64;
    public int NLayers { get; init; } = 2;
    public int NHeads { get; init; } = 4;
    public int DMlp { get; init; } = 256;
    public int EvalExamples { get; init; } = 512;
    /// <summary>With a resume directory: save the training state (weights, AdamW moments, step) every N steps.</summary>
    public int SaveStateEvery { get; init; } = 100;
}

/// <summary>Task accuracy and the task metric (IOI: mean logit difference; greater-than: mean probability difference).</summary>
public sealed record TaskScore(string Task, int Examples, double Accuracy, double Metric, string MetricName);

/// <summary>The outcome of training.</summary>
public sealed record ToyTrainingResult(TaskScore Score, double FinalLoss, IReadOnlyList<(int Step, string Directory)> Checkpoints, TimeSpan Duration);

/// <summary>Trains a small GPT-2-style model on a toy task and saves it (and optional intermediates) as HF checkpoints.</summary>
public static class ToyTrainer
{
    public static WordLevelTokenizer Tokenizer() => new(ToyTasks.Vocabulary(), ToyTasks.Unknown, 1, null, 0);

    public static TransformerConfig ModelConfig(ToyTrainingOptions o) => new()
    {
        Architecture = "gpt2", DModel = o.DModel, NLayers = o.NLayers, NHeads = o.NHeads, DMlp = o.DMlp,
        DVocab = ToyTasks.Vocabulary().Count, NCtx = 32, Act = Activation.GeluNew, TiedEmbeddings = false,
        BosTokenId = 1, PadTokenId = 0,
    };

    /// <summary>
    /// Trains and saves the model. With <paramref name="resumeDirectory"/> (durable across kills), the state is saved
    /// there every <see cref="ToyTrainingOptions.SaveStateEvery"/> steps and a later call continues from the last save;
    /// the batches are a function of (seed, step), so a resumed run ends with the weights of an uninterrupted one.
    /// </summary>
    public static ToyTrainingResult Train(ToyTrainingOptions o, string modelDirectory, string? checkpointDirectory = null,
        Action<int, double>? progress = null, CancellationToken ct = default, string? resumeDirectory = null)
    {
        TorchRuntime.EnsureLoaded();
        if (!ToyTasks.Tasks.Contains(o.Task))
        {
            throw new ArgumentException($"unknown toy task \"{o.Task}\"; expected one of: {string.Join(", ", ToyTasks.Tasks)}");
        }
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var tokenizer = Tokenizer();
        return TrainCore(o, modelDirectory, checkpointDirectory, progress, tokenizer, clock, ct, resumeDirectory);
    }

    private static ToyTrainingResult TrainCore(ToyTrainingOptions o, string modelDirectory, string? checkpointDirectory,
        Action<int, double>? progress, WordLevelTokenizer tokenizer, System.Diagnostics.Stopwatch clock, CancellationToken ct, string? resumeDirectory)
    {
        var saved = resumeDirectory is null ? null : TrainingState.TryRead(resumeDirectory);
        using var model = saved is null ? new HookedTransformer(ModelConfig(o)).InitWeights(o.Seed) : Checkpoint.Load(saved.Directory);
        // With a resume directory, intermediate checkpoints live there too (the step's output directory does not
        // survive a kill) and move to the output at the end.
        var checkpointRoot = resumeDirectory is null ? checkpointDirectory : Path.Combine(resumeDirectory, "checkpoints");
        var checkpoints = new List<(int, string)>();
        var loss = TrainingLoop.Run(model, saved, o, o.SaveStateEvery, (step, device) =>
        {
            var batch = ToyTasks.Generate(o.Task, o.BatchSize, o.Seed * 7919 + step);
            var (tokens, last) = Encode(tokenizer, batch.Select(e => e.Clean).ToList());
            tokens = tokens.to(device);
            last = last.to(device);
            var targets = tensor(batch.Select(e => (long)tokenizer.TokenToId(e.Correct)!.Value).ToArray(), device: device);
            var logits = model.Forward(tokens);
            var final = logits.gather(1, last.view(-1, 1, 1).expand(-1, 1, logits.shape[2])).squeeze(1);
            return F.cross_entropy(final, targets);
        }, progress, step =>
        {
            if (o.CheckpointEvery > 0 && checkpointRoot is not null && step % o.CheckpointEvery == 0)
            {
                Save(model, tokenizer, Path.Combine(checkpointRoot, $"step-{step:D6}"), o, step);
            }
        }, resumeDirectory, ct);
        if (o.CheckpointEvery > 0 && checkpointRoot is not null && checkpointDirectory is not null)
        {
            for (var step = o.CheckpointEvery; step <= o.Steps; step += o.CheckpointEvery)
            {
                var dir = Path.Combine(checkpointDirectory, $"step-{step:D6}");
                if (checkpointRoot != checkpointDirectory)
                {
                    Directory.CreateDirectory(checkpointDirectory);
                    Directory.Move(Path.Combine(checkpointRoot, $"step-{step:D6}"), dir);
                }
                checkpoints.Add((step, dir));
            }
        }
        Save(model, tokenizer, modelDirectory, o, o.Steps);
        var score = Evaluate(model, tokenizer, ToyTasks.Generate(o.Task, o.EvalExamples, o.Seed + 1_000_000_007));
        return new ToyTrainingResult(score, loss, checkpoints, clock.Elapsed);
    }

    /// <summary>The learning rate at a step (1-based): linear warm-up, then cosine decay to the final fraction.</summary>
    public static double LearningRateAt(ToyTrainingOptions o, int step)
    {
        var warmup = Math.Min(o.WarmupSteps, o.Steps);
        if (step <= warmup)
        {
            return o.LearningRate * step / Math.Max(1, warmup);
        }
        var progress = (double)(step - warmup) / Math.Max(1, o.Steps - warmup);
        var floor = o.FinalLearningRateFraction;
        return o.LearningRate * (floor + (1 - floor) * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }

    private static void Save(HookedTransformer model, WordLevelTokenizer tokenizer, string directory, ToyTrainingOptions o, int step)
    {
        Checkpoint.Save(model, directory, new System.Text.Json.Nodes.JsonObject
        {
            ["pipelines_toy_task"] = o.Task,
            ["pipelines_training_step"] = step,
            ["pipelines_seed"] = o.Seed,
        });
        tokenizer.Save(Path.Combine(directory, "tokenizer.json"), [ToyTasks.Pad, ToyTasks.Bos, ToyTasks.Unknown]);
    }

    /// <summary>[BOS]-prefixed, right-padded token ids and the index of each row's last real token.</summary>
    public static (Tensor Tokens, Tensor Last) Encode(ITextTokenizer tokenizer, IReadOnlyList<string> prompts)
    {
        var rows = prompts.Select(p => new List<int> { tokenizer.BosId ?? 1 }.Concat(tokenizer.Encode(p)).ToList()).ToList();
        var width = rows.Max(r => r.Count);
        var ids = new long[rows.Count, width];
        for (var b = 0; b < rows.Count; b++)
        {
            for (var t = 0; t < rows[b].Count; t++)
            {
                ids[b, t] = rows[b][t];
            }
        }
        return (tensor(ids), tensor(rows.Select(r => (long)r.Count - 1).ToArray()));
    }

    /// <summary>
    /// Accuracy and task metric on examples. IOI: argmax is the indirect object; metric = mean logit(IO) − logit(S).
    /// Greater-than: the best two-digit year is above YY; metric = mean Σ_{y>YY} P(y) − Σ_{y≤YY} P(y) (EAP-IG's).
    /// </summary>
    public static TaskScore Evaluate(HookedTransformer model, ITextTokenizer tokenizer, IReadOnlyList<ToyExample> examples, int batchSize = 128)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        double correct = 0, metric = 0;
        var task = examples[0].Task;
        var years = Enumerable.Range(0, 100).Select(y => (long)tokenizer.TokenToId(ToyTasks.Year(y))!.Value).ToArray();
        foreach (var chunk in examples.Chunk(batchSize))
        {
            using var inner = NewDisposeScope();
            var (tokens, last) = Encode(tokenizer, chunk.Select(e => e.Clean).ToList());
            var logits = model.Forward(tokens.to(model.W_E.device))[Scalars.Range(chunk.Length, device: model.W_E.device), last.to(model.W_E.device)].cpu().to(ScalarType.Float32);
            for (var i = 0; i < chunk.Length; i++)
            {
                var e = chunk[i];
                var row = logits[i];
                if (task == "ioi" || e.Label is null)
                {
                    long good = tokenizer.TokenToId(e.Correct)!.Value, bad = tokenizer.TokenToId(e.Incorrect!)!.Value;
                    correct += row.argmax().item<long>() == good ? 1 : 0;
                    metric += row[good].item<float>() - row[bad].item<float>();
                }
                else
                {
                    var probs = row.softmax(-1)[tensor(years)];
                    var yy = e.Label.Value;
                    correct += probs.argmax().item<long>() > yy ? 1 : 0;
                    metric += probs[(yy + 1)..].sum().item<float>() - probs[..(yy + 1)].sum().item<float>();
                }
            }
        }
        return new TaskScore(task, examples.Count, correct / examples.Count, metric / examples.Count, task == "ioi" ? "logit difference" : "probability difference");
    }
}
