using Pipelines.Engine.Ledger;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Tests.Models;

public sealed class QuantizationTests
{
    [Fact]
    public void Int8AndInt4RoundTripsStayWithinHalfAStepOfTheirScales()
    {
        using var scope = NewDisposeScope();
        using var g = new TorchSharp.torch.Generator(7);
        var w = randn(16, 200, generator: g) * Scalars.Of(0.05);
        w[3, 5] = tensor(2.0f); // an outlier widens its own row's step only
        var int8 = WeightQuantization.Quantize(w, Quantization.Int8);
        var rowStep = w.abs().amax([1], keepdim: true) / Scalars.Of(127);
        Assert.True(((int8 - w).abs() - rowStep / Scalars.Of(2)).max().item<float>() <= 1e-6f);
        var levels = (int8 / rowStep).round();
        Assert.True(((int8 / rowStep) - levels).abs().max().item<float>() < 1e-3f); // on the integer grid
        Assert.True(levels.abs().max().item<float>() <= 127);

        var int4 = WeightQuantization.Quantize(w, Quantization.Int4);
        for (var group = 0; group * 64 < 200; group++)
        {
            var cols = TensorIndex.Slice(group * 64, Math.Min(200, group * 64 + 64));
            var step = w[.., cols].abs().amax([1], keepdim: true) / Scalars.Of(7);
            Assert.True(((int4[.., cols] - w[.., cols]).abs() - step / Scalars.Of(2)).max().item<float>() <= 1e-6f);
            Assert.True((int4[.., cols] / step).round().abs().max().item<float>() <= 7);
        }
        Assert.True((int4 - w).abs().mean().item<float>() > (int8 - w).abs().mean().item<float>() * 5);
        Assert.Equal(w.to(ScalarType.BFloat16).to(ScalarType.Float32).data<float>().ToArray(), WeightQuantization.Quantize(w, Quantization.Bf16).data<float>().ToArray());
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void QuantizedLogitsDifferFromFloat32ByABoundedAmountAndOnlyLinearWeightsChange(string architecture)
    {
        using var scope = NewDisposeScope();
        using var reference = TinyModels.Create(architecture, seed: 3);
        var tokens = randint(0, reference.Config.DVocab, [2, 9], generator: new TorchSharp.torch.Generator(1), dtype: ScalarType.Int64);
        var f32 = reference.Forward(tokens).detach();
        var scale = f32.abs().max().item<float>();
        var errors = new Dictionary<Quantization, float>();
        foreach (var q in new[] { Quantization.Bf16, Quantization.Int8, Quantization.Int4 })
        {
            using var model = TinyModels.Create(architecture, seed: 3);
            WeightQuantization.Apply(model, q);
            foreach (var (name, p) in model.named_parameters())
            {
                var changed = (p - reference.named_parameters().Single(r => r.name == name).parameter).abs().max().item<float>() != 0;
                var linear = name.EndsWith("W_Q") || name.EndsWith("W_K") || name.EndsWith("W_V") || name.EndsWith("W_O") || name.EndsWith("W_in") || name.EndsWith("W_out") || name.EndsWith("W_gate");
                Assert.True(linear || !changed, $"{q}: {name} changed");
                Assert.True(!linear || changed, $"{q}: {name} unchanged");
            }
            errors[q] = (model.Forward(tokens) - f32).abs().max().item<float>() / scale;
        }
        // Relative to the largest logit, on tiny random models: bf16 (8 mantissa bits) and int8 (127 levels a row)
        // within 5 %. To first order the logit error scales with the weight step, and int4's step (absmax / 7) is 18×
        // int8's (absmax / 127) on these narrow rows (one group each): the ratio of the errors must be of that order.
        var summary = string.Join(", ", errors.Select(e => $"{e.Key} {e.Value:P2}"));
        Assert.True(errors[Quantization.Bf16] < 0.05, summary);
        Assert.True(errors[Quantization.Int8] < 0.05, summary);
        Assert.InRange(errors[Quantization.Int4] / errors[Quantization.Int8], 6, 54);
        Assert.True(errors[Quantization.Int8] > 0);
    }

    [Fact]
    public async Task ModelLoadWritesTheDeployedPrecisionAsANewArtifact()
    {
        using var ws = new Workspace();
        Pipelines.Models.Training.ToyTrainer.Train(new() { Task = "ioi", Steps = 5, DModel = 32, DMlp = 64, EvalExamples = 8 }, Path.Combine(ws.Root, "m"));
        var run = await ws.RunAsync("""
            { "name": "q", "steps": [
              { "id": "f32", "activity": "model.load", "inputs": { "path": "m" } },
              { "id": "int8", "activity": "model.load", "inputs": { "path": "m", "quantize": "int8" } },
              { "id": "int4", "activity": "model.load", "inputs": { "path": "m", "quantize": "int4" } } ] }
            """);
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var digests = run.Steps.Select(s => s.Outputs["model"].Digest).ToList();
        Assert.Equal(3, digests.Distinct().Count());
        var int8 = ws.Store.ObjectPath(digests[1]);
        Assert.Contains("\"pipelines_quantization\": \"int8\"", File.ReadAllText(Path.Combine(int8, "config.json")));
        using var loaded = Checkpoint.Load(int8);
        using var original = Checkpoint.Load(Path.Combine(ws.Root, "m"));
        var w = original.named_parameters().Single(p => p.name == "blocks.0.mlp.W_in").parameter;
        var q = loaded.named_parameters().Single(p => p.name == "blocks.0.mlp.W_in").parameter;
        using var scope = NewDisposeScope();
        var expected = WeightQuantization.Quantize(w.t(), Quantization.Int8).t();
        Assert.Equal(0f, (q - expected).abs().max().item<float>());
        Assert.True(File.Exists(Path.Combine(int8, "tokenizer.json")));
    }
}
