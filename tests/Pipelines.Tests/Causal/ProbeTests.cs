using Pipelines.Activities.Causal;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using Pipelines.Tests.Models;
using Xunit;
using static TorchSharp.torch;

namespace Pipelines.Tests.Causal;

/// <summary>Probes on a random model with an attribute planted in the embeddings: found where it is, and the control task is not.</summary>
public sealed class ProbeTests
{
    [Fact]
    public void APlantedLinearAttributeIsDecodedAndTheControlTaskStaysNearChance()
    {
        var words = Enumerable.Range(0, 396).Select(i => $"w{i}").ToList();
        var tokenizer = WordLevelTokenizer.WithSpecials(words, "[PAD]", "[BOS]", "[EOS]", "[UNK]");
        var model = new HookedTransformer(TinyModels.Gpt2 with { DVocab = 400 }).InitWeights(4, std: 0.2);
        // The planted attribute: words w0..w197 carry +u in their embedding, w198..w395 carry −u.
        using (no_grad())
        {
            using var g = new Generator(8);
            var u = randn([model.Config.DModel], generator: g);
            u.div_(u.norm());
            for (var i = 0; i < words.Count; i++)
            {
                model.W_E[tokenizer.TokenToId(words[i])!.Value].PlusInPlace(u.mul(Scalars.Of(i < 198 ? 1.2 : -1.2)));
            }
        }
        var rng = new Random(2);
        var rows = new List<ProbeExample>();
        var collector = new ActivationCollector(model, tokenizer);
        for (var n = 0; n < 800; n++)
        {
            var w = rng.Next(words.Count);
            var ids = collector.Ids($"w{rng.Next(words.Count)} w{rng.Next(words.Count)} w{w}");
            rows.Add(new ProbeExample(ids, w < 198 ? "a" : "b", $"w{w}", [$"w{w}"]));
        }
        using var x = collector.Collect(rows.Select(r => r.Ids).ToList(), PatchHook.ResidPre, [0, 1], [-1]);
        Assert.Equal(new long[] { 800, 2, 1, model.Config.DModel }, x.shape);
        var (results, weights) = ProbeTraining.Train(x, rows, "resid_pre", [0, 1], ["last"], [1e-4, 1e-2], seed: 1);
        var cell = results.Cells[0][0];
        Assert.True(cell.Accuracy >= 0.99, $"planted attribute at layer 0: {cell.Accuracy:P1}");
        Assert.True(cell.Control < 0.65, $"control task on held-out word types: {cell.Control:P1} (chance {results.Chance:P1})");
        Assert.True(cell.Selectivity > 0.3, $"selectivity {cell.Selectivity:F2}");
        Assert.InRange(results.Chance, 0.5, 0.6);
        Assert.True(cell.Low <= cell.Accuracy && cell.Accuracy <= cell.High);
        // No word type crosses splits.
        var (train, _, test) = ProbeTraining.Split(rows, 1);
        Assert.Empty(train.Select(i => rows[i].Group).Intersect(test.Select(i => rows[i].Group)));
        // The saved weights classify as the probe does: W·x + b in raw coordinates.
        var w0 = weights.First(t => t.Name == "L0.last.weight").Tensor;
        var b0 = weights.First(t => t.Name == "L0.last.bias").Tensor;
        var predicted = x[.., 0, 0].matmul(w0.t()).Plus(b0).argmax(1);
        var truth = tensor(rows.Select(r => r.Label == "a" ? 0L : 1L).ToArray());
        Assert.True(predicted.eq(truth).to(ScalarType.Float32).mean().item<float>() > 0.98);
        foreach (var (_, t) in weights)
        {
            t.Dispose();
        }
    }

    [Fact]
    public void TheWilsonIntervalMatchesItsFormula()
    {
        var (low, high) = ProbeTraining.Wilson(0.5, 100);
        Assert.Equal(0.4038, low, 3);
        Assert.Equal(0.5962, high, 3);
    }
}
