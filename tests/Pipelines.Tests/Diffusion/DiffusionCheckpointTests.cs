using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Runtime;
using Xunit;
using static TorchSharp.torch;

namespace Pipelines.Tests.Diffusion;

/// <summary>The pipeline folder's loader and saver: round trips, fp16 variants, legacy names, and broken folders named precisely.</summary>
public sealed class DiffusionCheckpointTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "pl-diff-" + Guid.NewGuid().ToString("N"));

    static DiffusionCheckpointTests() => TorchRuntime.EnsureLoaded();

    public DiffusionCheckpointTests() => Directory.CreateDirectory(_root);

    public void Dispose() => Directory.Delete(_root, true);

    private string Saved(string name, bool fp16 = false, long seed = 2)
    {
        var dir = Path.Combine(_root, name);
        using var p = KnownConfigs.Tiny(seed);
        p.Save(dir, fp16);
        return dir;
    }

    private static Tensor Eps(DiffusionPipeline p)
    {
        using var g = new Generator(9);
        var x = randn([1, 4, 8, 8], generator: g);
        using var noGrad = no_grad();
        return p.Unet.Forward(x, tensor(321), p.EncodePrompts(["a green triangle"]));
    }

    [Fact]
    public void SavedFolderLoadsBackBitExactAndFp16VariantLoadsAlone()
    {
        using var scope = NewDisposeScope();
        var dir = Saved("fp32");
        foreach (var f in new[] { "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json" })
        {
            Assert.True(File.Exists(Path.Combine(dir, f)), f);
        }
        using var original = KnownConfigs.Tiny(2);
        using var loaded = DiffusionPipeline.Load(dir);
        Assert.Equal(0f, (Eps(original) - Eps(loaded)).abs().max().item<float>());
        Assert.Equal("PNDMScheduler", loaded.SchedulerConfig.ClassName);
        Assert.Equal(1, loaded.SchedulerConfig.StepsOffset);
        Assert.Equal(2, loaded.DownFactor);

        var half = Saved("fp16", fp16: true);
        Assert.True(File.Exists(Path.Combine(half, "unet", "diffusion_pytorch_model.fp16.safetensors")));
        Assert.False(File.Exists(Path.Combine(half, "unet", "diffusion_pytorch_model.safetensors")));
        using var fromHalf = DiffusionPipeline.Load(half);
        var a = Eps(original);
        Assert.True((Eps(fromHalf) - a).abs().max().item<float>() < 0.02f * a.abs().max().item<float>());
    }

    [Fact]
    public void LegacyVaeAttentionNamesAndPositionIdsAreAccepted()
    {
        using var scope = NewDisposeScope();
        var dir = Saved("legacy");
        var vaeFile = Path.Combine(dir, "vae", "diffusion_pytorch_model.safetensors");
        using (var st = SafetensorsFile.Open(vaeFile))
        {
            var renamed = st.Entries.Keys.Select(k =>
            {
                var t = st.Read(k);
                var legacy = k.Replace(".to_q.", ".query.").Replace(".to_k.", ".key.").Replace(".to_v.", ".value.").Replace(".to_out.0.", ".proj_attn.");
                // Some old files store the attention projections as 1×1 convolutions.
                return (legacy, legacy.Contains(".query.weight") ? t.view(t.shape[0], t.shape[1], 1, 1) : t);
            }).ToList();
            st.Dispose();
            SafetensorsFile.Write(vaeFile + ".new", renamed);
        }
        File.Move(vaeFile + ".new", vaeFile, true);
        var textFile = Path.Combine(dir, "text_encoder", "model.safetensors");
        using (var st = SafetensorsFile.Open(textFile))
        {
            var all = st.Entries.Keys.Select(k => (k, st.Read(k))).Append(("text_model.embeddings.position_ids", Scalars.Range(77).unsqueeze(0))).ToList();
            st.Dispose();
            SafetensorsFile.Write(textFile + ".new", all);
        }
        File.Move(textFile + ".new", textFile, true);
        using var loaded = DiffusionPipeline.Load(dir);
        using var original = KnownConfigs.Tiny(2);
        using var noGrad = no_grad();
        var z = randn([1, 4, 8, 8]);
        Assert.Equal(0f, (loaded.Vae!.Decode(z) - original.Vae!.Decode(z)).abs().max().item<float>());
    }

    [Theory]
    [InlineData("truncated")]
    [InlineData("missing-tensor")]
    [InlineData("wrong-shape")]
    [InlineData("extra-tensor")]
    [InlineData("bad-config")]
    [InlineData("bad-heads")]
    [InlineData("no-index")]
    [InlineData("pickle-only")]
    [InlineData("nan")]
    public void BrokenFoldersFailNamingTheFileAndTensor(string damage)
    {
        using var scope = NewDisposeScope();
        var dir = Saved(damage);
        var unetFile = Path.Combine(dir, "unet", "diffusion_pytorch_model.safetensors");
        string expected;
        void Rewrite(Func<List<(string Name, Tensor T)>, List<(string, Tensor)>> edit)
        {
            List<(string, Tensor)> tensors;
            using (var st = SafetensorsFile.Open(unetFile))
            {
                tensors = edit(st.Entries.Keys.Select(k => (k, st.Read(k))).ToList());
            }
            SafetensorsFile.Write(unetFile, tensors);
        }
        switch (damage)
        {
            case "truncated":
                using (var fs = new FileStream(unetFile, FileMode.Open))
                {
                    fs.SetLength(fs.Length - 1000);
                }
                expected = "diffusion_pytorch_model.safetensors";
                break;
            case "missing-tensor":
                Rewrite(l => l.Where(x => x.Name != "mid_block.attentions.0.proj_in.weight").Select(x => (x.Name, x.T)).ToList());
                expected = "missing tensor \"mid_block.attentions.0.proj_in.weight\"";
                break;
            case "wrong-shape":
                Rewrite(l => l.Select(x => x.Name == "conv_in.weight" ? (x.Name, zeros(32, 4, 1, 1)) : (x.Name, x.T)).ToList());
                expected = "tensor \"conv_in.weight\" has shape [32, 4, 1, 1], expected [32, 4, 3, 3]";
                break;
            case "extra-tensor":
                Rewrite(l => l.Select(x => (x.Name, x.T)).Append(("down_blocks.7.conv.weight", zeros(1))).ToList());
                expected = "unexpected tensor \"down_blocks.7.conv.weight\"";
                break;
            case "bad-config":
                File.WriteAllText(Path.Combine(dir, "unet", "config.json"), "{\"block_out_channels\": [32, 64], \"layers_per_block\": \"two\"}");
                expected = "$.layers_per_block: expected an integer";
                break;
            case "bad-heads":
                var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "unet", "config.json")))!.AsObject();
                cfg["attention_head_dim"] = 5;
                File.WriteAllText(Path.Combine(dir, "unet", "config.json"), cfg.ToJsonString());
                expected = "do not split into 5 heads";
                break;
            case "no-index":
                File.Delete(Path.Combine(dir, "model_index.json"));
                expected = "model_index.json: no such file";
                break;
            case "pickle-only":
                File.Delete(unetFile);
                File.WriteAllText(Path.Combine(dir, "unet", "diffusion_pytorch_model.bin"), "not a pickle");
                expected = "legacy pickles are not supported";
                break;
            default:
                Rewrite(l => l.Select(x => x.Name == "conv_out.bias" ? (x.Name, full(4, Scalars.Of(double.NaN))) : (x.Name, x.T)).ToList());
                expected = "tensor \"conv_out.bias\" holds NaN";
                break;
        }
        var e = Assert.Throws<CheckpointException>(() => DiffusionPipeline.Load(dir));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }
}
