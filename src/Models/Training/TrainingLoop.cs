using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Models.Training;

/// <summary>
/// The optimisation loop both trainers share: the model on the runtime's compute device, AdamW (β 0.9/0.98, <see cref="StableAdamW"/>), the
/// warm-up + cosine schedule of <see cref="ToyTrainer.LearningRateAt"/>, progress every 50 steps, and with a resume
/// directory the state saved every <c>saveStateEvery</c> steps and restored from <c>saved</c>.
/// Batches must be a function of the step, so a resumed run ends with an uninterrupted run's weights.
/// </summary>
public static class TrainingLoop
{
    /// <summary>Runs the remaining steps; <paramref name="lossAt"/> builds a step's batch on the device and returns its loss.</summary>
    public static double Run(HookedTransformer model, TrainingState? saved, ToyTrainingOptions schedule, int saveStateEvery,
        Func<int, Device, Tensor> lossAt, Action<int, double>? progress, Action<int>? afterStep, string? resumeDirectory, CancellationToken ct)
    {
        var device = TorchRuntime.ComputeDevice;
        if (device.type != DeviceType.CPU)
        {
            model.to(device);
        }
        using var optimizer = new StableAdamW(model.parameters(), schedule.LearningRate, 0.9, 0.98, 1e-8, schedule.WeightDecay);
        saved?.LoadOptimizer(optimizer);
        var loss = saved?.Loss ?? double.NaN;
        for (var step = (saved?.Step ?? 0) + 1; step <= schedule.Steps; step++)
        {
            ct.ThrowIfCancellationRequested();
            using (NewDisposeScope())
            {
                optimizer.LearningRate = ToyTrainer.LearningRateAt(schedule, step);
                optimizer.zero_grad();
                var l = lossAt(step, device);
                l.backward();
                optimizer.step();
                loss = l.item<float>();
            }
            if (step % 50 == 0 || step == schedule.Steps)
            {
                progress?.Invoke(step, loss);
            }
            afterStep?.Invoke(step);
            if (resumeDirectory is not null && saveStateEvery > 0 && step % saveStateEvery == 0 && step < schedule.Steps)
            {
                TrainingState.Write(resumeDirectory, model, optimizer, step, loss);
            }
        }
        return loss;
    }
}
