using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;

namespace Pipelines.Tests.Models;

public sealed class CheckpointTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "pipelines-ckpt-" + Guid.NewGuid().ToString("N")[..8]);

    /// <summary>Bit-exact equality (Tensor.equal is elementwise in TorchSharp).</summary>
    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.dtype == b.dtype && a.eq(b).all().item<bool>();

    private static Tensor Tokens(int length = 6) => tensor(new long[,] { { 1, 5, 9, 2, 7, 3 }, { 4, 4, 8, 0, 1, 6 } })[.., ..length];

    private static HookedTransformer Untied(string arch) => arch == "qwen2" ? TinyModels.Create(arch) : TinyModels.Create(arch);

    [Theory]
    [MemberData(nameof(TinyModels.All), MemberType = typeof(TinyModels))]
    public void SaveThenLoadRoundTripsBitExactly(string arch)
    {
        using var model = TinyModels.Create(arch);
        Checkpoint.Save(model, _dir);
        using var loaded = Checkpoint.Load(_dir);
        var original = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, p) in loaded.named_parameters())
        {
            if (name == "W_U" && model.Config.TiedEmbeddings)
            {
                Assert.True(Same(p, original["W_E"].t()), "tied unembedding is W_E transposed");
                continue;
            }
            Assert.True(Same(p, original[name]), $"{name} differs after save/load");
        }
        Assert.Equal(HfConfig.Write(model.Config).ToJsonString(), HfConfig.Write(loaded.Config).ToJsonString());
    }

    [Theory]
    [MemberData(nameof(TinyModels.All), MemberType = typeof(TinyModels))]
    public void LoadedModelMatchesAnIndependentForwardOnTheHfTensors(string arch)
    {
        using var model = TinyModels.Create(arch);
        if (model.Config.TiedEmbeddings)
        {
            using (no_grad())
            {
                model.W_U.copy_(model.W_E.t()); // a tied checkpoint stores only W_E
            }
        }
        Checkpoint.Save(model, _dir);
        using var loaded = Checkpoint.Load(_dir);
        using var weights = Checkpoint.OpenWeights(_dir);
        using var tokens = Tokens();
        using var ours = loaded.Forward(tokens);
        using var scope = NewDisposeScope();
        var reference = HfReference.Forward(loaded.Config, weights.Read, tokens);
        var diff = (ours - reference).abs().max().item<float>();
        Assert.True(diff < 1e-4, $"{arch}: max |Δlogit| {diff}");
    }

    [Fact]
    public void Gpt2KeysLoadWithoutThePrefixAndStrayBuffersAreIgnored()
    {
        using var model = TinyModels.Create("gpt2");
        Checkpoint.Save(model, _dir);
        using var reference = Checkpoint.Load(_dir); // tied: the checkpoint stores W_E only
        using var expected = reference.Forward(Tokens());
        var renamed = new List<(string, Tensor)>();
        using (var w = Checkpoint.OpenWeights(_dir))
        {
            foreach (var name in w.Names)
            {
                renamed.Add((name.Replace("transformer.", ""), w.Read(name)));
            }
        }
        renamed.Add(("h.0.attn.bias", ones(1, 1, 32, 32).tril())); // the old causal-mask buffer
        renamed.Add(("h.0.attn.masked_bias", tensor(-1e4f)));
        SafetensorsFile.Write(Path.Combine(_dir, Checkpoint.WeightsFile), renamed);
        using var loaded = Checkpoint.Load(_dir);
        using var logits = loaded.Forward(Tokens());
        Assert.True(Same(logits, expected));
    }

    [Theory]
    [InlineData(ScalarType.Float16)]
    [InlineData(ScalarType.BFloat16)]
    public void HalfPrecisionWeightsAreUpcast(ScalarType dtype)
    {
        using var model = TinyModels.Create("llama");
        Checkpoint.Save(model, _dir);
        List<(string, Tensor)> halves;
        using (var w = Checkpoint.OpenWeights(_dir))
        {
            halves = w.Names.Select(n => (n, w.Read(n).to(dtype))).ToList();
        }
        SafetensorsFile.Write(Path.Combine(_dir, Checkpoint.WeightsFile), halves);
        using var loaded = Checkpoint.Load(_dir);
        Assert.Equal(ScalarType.Float32, loaded.W_E.dtype);
        Assert.True(Same(loaded.W_E, model.W_E.to(dtype).to(ScalarType.Float32)));
    }

    [Fact]
    public void ShardedCheckpointsLoadThroughTheirIndex()
    {
        using var model = TinyModels.Create("qwen2");
        Checkpoint.Save(model, _dir);
        using var reference = Checkpoint.Load(_dir);
        using var expected = reference.Forward(Tokens());
        var shardDir = Path.Combine(_dir, "sharded");
        Directory.CreateDirectory(shardDir);
        File.Copy(Path.Combine(_dir, Checkpoint.ConfigFile), Path.Combine(shardDir, Checkpoint.ConfigFile));
        var map = new JsonObject();
        using (var w = Checkpoint.OpenWeights(_dir))
        {
            var names = w.Names.Order(StringComparer.Ordinal).ToList();
            var first = names.Take(names.Count / 2).ToList();
            SafetensorsFile.Write(Path.Combine(shardDir, "model-00001-of-00002.safetensors"), first.Select(n => (n, w.Read(n))));
            SafetensorsFile.Write(Path.Combine(shardDir, "model-00002-of-00002.safetensors"), names.Skip(first.Count).Select(n => (n, w.Read(n))));
            foreach (var n in names)
            {
                map[n] = first.Contains(n) ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
            }
        }
        File.WriteAllText(Path.Combine(shardDir, Checkpoint.IndexFile), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());
        using var loaded = Checkpoint.Load(shardDir);
        using var logits = loaded.Forward(Tokens());
        Assert.True(Same(logits, expected));
    }

    [Fact]
    public void BadCheckpointsGiveErrorsNamingTheFileAndTensor()
    {
        using var model = TinyModels.Create("gpt2");
        Checkpoint.Save(model, _dir);
        var weights = Path.Combine(_dir, Checkpoint.WeightsFile);
        var bytes = File.ReadAllBytes(weights);

        File.WriteAllBytes(weights, bytes[..(bytes.Length - 100)]);
        var truncated = Assert.Throws<CheckpointException>(() => Checkpoint.Load(_dir));
        Assert.Contains("model.safetensors", truncated.Message);
        Assert.Contains("truncated", truncated.Message);

        File.WriteAllBytes(weights, bytes[..4]);
        Assert.Contains("truncated", Assert.Throws<CheckpointException>(() => Checkpoint.Load(_dir)).Message);

        var garbage = (byte[])bytes.Clone();
        garbage[8] = (byte)'#'; // the header's opening brace
        File.WriteAllBytes(weights, garbage);
        Assert.Contains("not valid JSON", Assert.Throws<CheckpointException>(() => Checkpoint.Load(_dir)).Message);

        using (var w = Checkpoint.OpenWeights(Copy(bytes)))
        {
            var kept = w.Names.Where(n => n != "transformer.h.1.mlp.c_fc.weight").Select(n => (n, w.Read(n))).ToList();
            SafetensorsFile.Write(weights, kept);
        }
        var missing = Assert.Throws<CheckpointException>(() => Checkpoint.Load(_dir));
        Assert.Contains("missing tensor \"transformer.h.1.mlp.c_fc.weight\"", missing.Message);

        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(_dir, "config.json")))!;
        config["model_type"] = "mamba";
        File.WriteAllText(Path.Combine(_dir, "config.json"), config.ToJsonString());
        var unknown = Assert.Throws<CheckpointException>(() => Checkpoint.Load(_dir));
        Assert.Contains("config.json", unknown.Message);
        Assert.Contains("unsupported model_type \"mamba\"", unknown.Message);
    }

    private string Copy(byte[] bytes)
    {
        var dir = Path.Combine(_dir, "copy");
        Directory.CreateDirectory(dir);
        File.WriteAllBytes(Path.Combine(dir, Checkpoint.WeightsFile), bytes);
        return dir;
    }

    public void Dispose()
    {
        if (Directory.Exists(_dir))
        {
            Directory.Delete(_dir, recursive: true);
        }
    }
}
