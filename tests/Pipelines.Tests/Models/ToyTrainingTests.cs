using Pipelines.Models.Checkpoints;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Training;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Pipelines.Tests.Models;

public sealed class ToyTrainingTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "pipelines-toy-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>
    /// The quickstart's promise: with its defaults, every seed from 0 to 9 learns IOI (≥ 95 % held-out accuracy). With
    /// the old constant learning rate, seeds 0 and 2 stalled at 87–89 % on one CPU and seed 0 at 59.8 % on another;
    /// warm-up and cosine decay finish every seed's transition by step ~400 of 800, so the result has a margin and does
    /// not hinge on one CPU's rounding. Slow tier: ten trainings.
    /// </summary>
    [Theory]
    [Trait("Tier", "Slow")]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(9)]
    public void EverySeedOfTheQuickstartDefaultsLearnsIoi(long seed)
    {
        var result = ToyTrainer.Train(new ToyTrainingOptions { Task = "ioi", Seed = seed }, Path.Combine(_dir, $"seed-{seed}"));
        output.WriteLine($"seed {seed}: accuracy {result.Score.Accuracy:P1}, logit difference {result.Score.Metric:F2}, loss {result.FinalLoss:F4}, {result.Duration.TotalSeconds:F1} s");
        Assert.True(result.Score.Accuracy >= 0.95, $"seed {seed}: accuracy {result.Score.Accuracy:P1} < 95 %");
    }

    [Fact]
    public void TheActivityDefaultsAreTheTrainersDefaults()
    {
        // The quickstart trains through model.train-toy; the seed test above trains through ToyTrainer directly.
        var activity = new Pipelines.Activities.Model.TrainToyActivity.Input();
        var trainer = new ToyTrainingOptions();
        Assert.Equal((trainer.Steps, trainer.BatchSize, trainer.LearningRate, trainer.DModel, trainer.NLayers, trainer.NHeads, trainer.DMlp),
            (activity.Steps, activity.BatchSize, activity.LearningRate, activity.DModel, activity.NLayers, activity.NHeads, activity.DMlp));
    }

    [Fact]
    public void TheLearningRateWarmsUpThenDecaysToATenth()
    {
        var o = new ToyTrainingOptions { Steps = 800, WarmupSteps = 50, LearningRate = 4e-3 };
        Assert.Equal(4e-3 / 50, ToyTrainer.LearningRateAt(o, 1), 12);
        Assert.Equal(4e-3, ToyTrainer.LearningRateAt(o, 50), 12);
        Assert.Equal(4e-3 * (0.1 + 0.9 * 0.5), ToyTrainer.LearningRateAt(o, 425), 12); // halfway through the decay
        Assert.Equal(4e-4, ToyTrainer.LearningRateAt(o, 800), 12);
    }

    [Theory]
    [InlineData("ioi", 0.95)]
    [InlineData("greater-than", 0.95)]
    public void ToyModelsReachHighAccuracyOnTheirTask(string task, double required)
    {
        var options = new ToyTrainingOptions { Task = task, Seed = 1 };
        var result = ToyTrainer.Train(options, Path.Combine(_dir, task));
        output.WriteLine($"{task}: accuracy {result.Score.Accuracy:P1}, {result.Score.MetricName} {result.Score.Metric:F3}, loss {result.FinalLoss:F4}, {result.Duration.TotalSeconds:F1} s");
        Assert.True(result.Score.Accuracy >= required, $"{task}: accuracy {result.Score.Accuracy:P1} < {required:P0}");

        // The saved checkpoint is a real HF checkpoint with its tokenizer, and scores the same when reloaded.
        using var loaded = Checkpoint.Load(Path.Combine(_dir, task));
        var tokenizer = TokenizerLoader.FromDirectory(Path.Combine(_dir, task))!;
        var again = ToyTrainer.Evaluate(loaded, tokenizer, ToyTasks.Generate(task, options.EvalExamples, options.Seed + 1_000_000_007));
        Assert.Equal(result.Score.Accuracy, again.Accuracy);
    }

    [Fact]
    public void TrainingIsDeterministicUnderASeedAndSavesIntermediateCheckpoints()
    {
        var options = new ToyTrainingOptions { Task = "ioi", Seed = 5, Steps = 40, CheckpointEvery = 20, EvalExamples = 32 };
        var a = ToyTrainer.Train(options, Path.Combine(_dir, "a"), Path.Combine(_dir, "a-ckpt"));
        var b = ToyTrainer.Train(options, Path.Combine(_dir, "b"), Path.Combine(_dir, "b-ckpt"));
        Assert.Equal(File.ReadAllBytes(Path.Combine(_dir, "a", "model.safetensors")), File.ReadAllBytes(Path.Combine(_dir, "b", "model.safetensors")));
        Assert.Equal([20, 40], a.Checkpoints.Select(c => c.Step));
        Assert.True(File.Exists(Path.Combine(_dir, "a-ckpt", "step-000020", "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(_dir, "a-ckpt", "step-000020", "tokenizer.json")));
        Assert.Equal(File.ReadAllBytes(Path.Combine(_dir, "a-ckpt", "step-000040", "model.safetensors")), File.ReadAllBytes(Path.Combine(_dir, "a", "model.safetensors")));
        var c = ToyTrainer.Train(options with { Seed = 6, CheckpointEvery = 0 }, Path.Combine(_dir, "c"));
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(_dir, "a", "model.safetensors")), File.ReadAllBytes(Path.Combine(_dir, "c", "model.safetensors")));
    }

    /// <summary>
    /// A run stopped after its save at step 40 and started again with the same resume directory continues from step
    /// 41 and ends with the bytes of an uninterrupted run: weights, AdamW moments and the step all survive the save.
    /// </summary>
    [Fact]
    public void TrainingStoppedMidwayResumesFromItsLastSaveToTheSameWeights()
    {
        var options = new ToyTrainingOptions { Task = "ioi", Seed = 3, Steps = 60, CheckpointEvery = 30, SaveStateEvery = 20, EvalExamples = 16 };
        ToyTrainer.Train(options, Path.Combine(_dir, "whole"), Path.Combine(_dir, "whole-ckpt"));
        var resume = Path.Combine(_dir, "resume");
        using var stop = new CancellationTokenSource();
        var steps = new List<int>();
        Assert.ThrowsAny<OperationCanceledException>(() => ToyTrainer.Train(options, Path.Combine(_dir, "killed"), Path.Combine(_dir, "killed-ckpt"),
            (step, _) => { steps.Add(step); if (step == 50) { stop.Cancel(); } }, stop.Token, resume));
        Assert.Equal(40, Pipelines.Models.Training.TrainingState.TryRead(resume)!.Step); // the save before the stop
        steps.Clear();
        var resumed = ToyTrainer.Train(options, Path.Combine(_dir, "resumed"), Path.Combine(_dir, "resumed-ckpt"), (step, _) => steps.Add(step), default, resume);
        Assert.Equal([50, 60], steps); // progress is reported every 50 steps and at the end: it began after 40
        Assert.Equal(File.ReadAllBytes(Path.Combine(_dir, "whole", "model.safetensors")), File.ReadAllBytes(Path.Combine(_dir, "resumed", "model.safetensors")));
        Assert.Equal([30, 60], resumed.Checkpoints.Select(c => c.Step));
        Assert.Equal(File.ReadAllBytes(Path.Combine(_dir, "whole-ckpt", "step-000030", "model.safetensors")),
            File.ReadAllBytes(Path.Combine(_dir, "resumed-ckpt", "step-000030", "model.safetensors")));
    }

    [Fact]
    public void ToyTasksMakeSameLengthCounterfactualPairs()
    {
        var tokenizer = ToyTrainer.Tokenizer();
        foreach (var task in ToyTasks.Tasks)
        {
            foreach (var e in ToyTasks.Generate(task, 200, 3))
            {
                Assert.Equal(tokenizer.Encode(e.Clean).Count, tokenizer.Encode(e.Corrupted).Count);
                Assert.DoesNotContain(ToyTasks.Unknown, tokenizer.Decode(tokenizer.Encode(e.Clean + " " + e.Correct)));
                if (task == "ioi")
                {
                    var words = e.Clean.Split(' ');
                    Assert.Equal(1, words.Count(w => w == e.Correct)); // the indirect object appears once
                    Assert.Equal(2, words.Count(w => w == e.Incorrect)); // the subject twice
                    Assert.Equal(1, e.Corrupted.Split(' ').Count(w => w == e.Incorrect)); // ABC: S2 replaced
                }
                else
                {
                    Assert.True(int.Parse(e.Correct) > e.Label);
                    Assert.Contains(" 17 01 ", e.Corrupted);
                }
            }
        }
        Assert.Equal(ToyTasks.Generate("ioi", 10, 9), ToyTasks.Generate("ioi", 10, 9));
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }
}
