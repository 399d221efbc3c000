using Pipelines.Models.Adapters;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Tests.Models;

/// <summary>
/// LoRA adapters: the unmerged forward, the merge and the unmerge agree; the runtime's layout mapping agrees with an
/// independent merge written from PEFT's definition in the checkpoint's own key space (W + (α/r)·B·A on nn.Linear
/// weights, its transpose on GPT-2's Conv1D); the PEFT files round-trip; training moves only the adapter.
/// </summary>
public sealed class LoraTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pipelines-lora-").FullName;
    private static readonly long[] Tokens = [1, 5, 9, 3, 7, 2, 11, 4];

    private static LoraAdapter Adapter(HookedTransformer model, long seed, string[]? targets = null)
    {
        targets ??= model.Config.Architecture == "gpt2" ? ["c_attn", "c_proj", "c_fc"] : ["q", "k", "v", "o", "gate", "up", "down"];
        var adapter = LoraAdapter.Create(model.Config, targets, rank: 4, alpha: 8, seed: seed);
        // B starts at zero (the adapter starts as the base model); give it values so the update is not trivial.
        using var _ = no_grad();
        using var g = new Generator((ulong)seed + 1);
        foreach (var (name, p) in adapter.named_parameters())
        {
            if (name.EndsWith("_B", StringComparison.Ordinal))
            {
                p.copy_(randn(p.shape, generator: g).mul(Scalars.Of(0.05)));
            }
        }
        return adapter;
    }

    private static Tensor Logits(HookedTransformer model)
    {
        using var _ = no_grad();
        using var ids = tensor(Tokens).unsqueeze(0);
        return model.Forward(ids).detach().clone();
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    [InlineData("qwen2")]
    public void MergedEqualsUnmergedAndUnmergingRestoresTheBase(string arch)
    {
        using var model = TinyModels.Create(arch);
        using var baseLogits = Logits(model);
        var before = model.blocks[0].attn.W_Q.detach().clone();
        using var adapter = Adapter(model, 3);
        adapter.Attach(model);
        using var unmerged = Logits(model);
        Assert.True(unmerged.sub(baseLogits).abs().max().item<float>() > 1e-3, "the adapter changes the logits");
        adapter.Merge();
        using var merged = Logits(model);
        Assert.True(merged.allclose(unmerged, rtol: 0, atol: 1e-5), $"merged vs unmerged: {merged.sub(unmerged).abs().max().item<float>()}");
        adapter.Unmerge();
        Assert.True(model.blocks[0].attn.W_Q.allclose(before, rtol: 0, atol: 1e-6));
        adapter.Scale = 0;
        using var off = Logits(model);
        // Up to the rounding an unmerge leaves in the weights (W + Δ − Δ).
        Assert.True(off.allclose(baseLogits, rtol: 0, atol: 1e-5), $"scale 0 is the base model: {off.sub(baseLogits).abs().max().item<float>()}");
        adapter.Scale = 1;
        adapter.Detach();
        using var detached = Logits(model);
        Assert.True(detached.allclose(baseLogits, rtol: 0, atol: 1e-5));
    }

    [Theory]
    [InlineData("gpt2")]
    [InlineData("llama")]
    public void PeftFilesLoadOntoTheBaseAndGiveTheLogitsOfAnIndependentMergeInCheckpointSpace(string arch)
    {
        using var model = TinyModels.Create(arch);
        var baseDir = Path.Combine(_dir, "base");
        Checkpoint.Save(model, baseDir);
        using (var adapter = Adapter(model, 7))
        {
            adapter.Save(Path.Combine(_dir, "adapter"), "base");
        }

        // Independent merge, from PEFT's definition, on the checkpoint's own tensors and key names.
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "adapter", LoraAdapter.ConfigFile)))!;
        var scaling = config["lora_alpha"]!.GetValue<double>() / config["r"]!.GetValue<int>();
        var conv1d = config["fan_in_fan_out"]!.GetValue<bool>();
        var mergedDir = Path.Combine(_dir, "merged");
        Directory.CreateDirectory(mergedDir);
        File.Copy(Path.Combine(baseDir, Checkpoint.ConfigFile), Path.Combine(mergedDir, Checkpoint.ConfigFile));
        using (var weights = SafetensorsFile.Open(Path.Combine(baseDir, "model.safetensors")))
        using (var lora = SafetensorsFile.Open(Path.Combine(_dir, "adapter", LoraAdapter.WeightsFile)))
        using (var scope = NewDisposeScope())
        {
            var tensors = weights.Entries.Keys.ToDictionary(k => k, weights.Read);
            var loraKeys = lora.Entries.Keys.Where(k => k.EndsWith(".lora_A.weight", StringComparison.Ordinal)).ToList();
            Assert.NotEmpty(loraKeys);
            foreach (var key in loraKeys)
            {
                var module = key["base_model.model.".Length..^".lora_A.weight".Length];
                var delta = matmul(lora.Read(module.Insert(0, "base_model.model.") + ".lora_B.weight"), lora.Read(key)).mul(Scalars.Of(scaling)); // [out, in]
                var name = module + ".weight";
                Assert.True(tensors.ContainsKey(name), $"{name} is a weight of the checkpoint");
                tensors[name] = tensors[name].Plus(conv1d ? delta.t() : delta);
            }
            SafetensorsFile.Write(Path.Combine(mergedDir, "model.safetensors"), tensors.Select(kv => (kv.Key, kv.Value.contiguous())));
        }
        using var reference = Checkpoint.Load(mergedDir);
        using var expected = Logits(reference);

        using var loaded = Checkpoint.Load(baseDir);
        using var peft = LoraAdapter.Load(Path.Combine(_dir, "adapter"), loaded.Config);
        peft.Attach(loaded);
        using var got = Logits(loaded);
        Assert.True(got.allclose(expected, rtol: 0, atol: 1e-4), $"adapter vs independent merge: {got.sub(expected).abs().max().item<float>()}");
        peft.Merge();
        using var gotMerged = Logits(loaded);
        Assert.True(gotMerged.allclose(expected, rtol: 0, atol: 1e-4));
    }

    [Fact]
    public void TrainingMovesTheAdapterAndLeavesTheFrozenBaseAlone()
    {
        using var model = TinyModels.Create("llama");
        foreach (var p in model.parameters())
        {
            p.requires_grad = false;
        }
        var before = model.parameters().Select(p => p.detach().clone()).ToList();
        using var adapter = LoraAdapter.Create(model.Config, ["q", "v", "down"], rank: 2, alpha: 4, layers: [1], seed: 5);
        adapter.Attach(model);
        using var optimizer = new StableAdamW(adapter.parameters(), 1e-2, weightDecay: 0);
        using var ids = tensor(Tokens).unsqueeze(0);
        var losses = new List<double>();
        for (var step = 0; step < 30; step++)
        {
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            var logits = model.Forward(ids);
            // Teach it to predict token 6 everywhere.
            var loss = nn.functional.cross_entropy(logits.view(-1, logits.shape[2]), full(Tokens.Length, Scalars.Int(6)));
            loss.backward();
            optimizer.step();
            losses.Add(loss.item<float>());
        }
        Assert.True(losses[^1] < losses[0] * 0.5, $"loss {losses[0]} → {losses[^1]}");
        Assert.All(model.parameters().Zip(before), pair => Assert.True(pair.First.allclose(pair.Second, rtol: 0, atol: 0)));
        Assert.All(adapter.Sites, s => Assert.Equal(1, s.Layer));
        foreach (var b in before)
        {
            b.Dispose();
        }
    }

    [Fact]
    public void AnAdapterForAnotherModelIsRefusedWithTheFileAndTheShapes()
    {
        using var big = TinyModels.Create("llama");
        using (var adapter = Adapter(big, 1))
        {
            adapter.Save(Path.Combine(_dir, "a"));
        }
        var other = big.Config with { DMlp = big.Config.DMlp * 2 };
        var e = Assert.Throws<CheckpointException>(() => LoraAdapter.Load(Path.Combine(_dir, "a"), other));
        Assert.Contains("adapter_model.safetensors", e.Message);
        Assert.Contains("needs", e.Message);
        var gpt2 = TinyModels.Create("gpt2");
        var wrongArch = Assert.Throws<CheckpointException>(() => LoraAdapter.Load(Path.Combine(_dir, "a"), gpt2.Config));
        Assert.Contains("no LoRA site", wrongArch.Message);
        gpt2.Dispose();
        Assert.Contains("no adapter_config.json", Assert.Throws<CheckpointException>(() => LoraAdapter.Load(_dir, big.Config)).Message);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);
}
