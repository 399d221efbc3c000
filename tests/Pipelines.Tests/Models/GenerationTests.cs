using System.Diagnostics;
using Pipelines.Models.Generation;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace Pipelines.Tests.Models;

public sealed class GenerationTests
{
    private static readonly WordLevelTokenizer Words = new(
        Enumerable.Range(0, 50).ToDictionary(i => i switch { 0 => "[PAD]", 1 => "[BOS]", 2 => "[EOS]", _ => $"w{i}" }, i => i), "[PAD]", 1, 2, 0);

    [Theory]
    [MemberData(nameof(TinyModels.All), MemberType = typeof(TinyModels))]
    public void KvCachedGenerationEqualsFullForwardGeneration(string arch)
    {
        using var model = TinyModels.Create(arch);
        var generator = new TextGenerator(model, Words);
        string[] prompts = ["w5 w9 w12", "w7 w3 w3 w8 w20 w31", "w44"]; // different lengths: left padding
        foreach (var options in new[]
        {
            new GenerationOptions { MaxNewTokens = 8, StopAtEos = false },
            new GenerationOptions { MaxNewTokens = 8, StopAtEos = false, Temperature = 0.8, TopK = 10, TopP = 0.9, Seed = 3 },
        })
        {
            var cached = generator.Generate(prompts, options);
            var full = generator.Generate(prompts, options with { UseKvCache = false });
            Assert.Equal(full.Select(g => g.Tokens), cached.Select(g => g.Tokens));
        }
    }

    [Fact]
    public void BatchedGenerationEqualsOnePromptAtATime()
    {
        using var model = TinyModels.Create("llama");
        var generator = new TextGenerator(model, Words);
        string[] prompts = ["w5 w9 w12", "w7 w3 w3 w8 w20 w31"];
        var options = new GenerationOptions { MaxNewTokens = 6, StopAtEos = false };
        var batched = generator.Generate(prompts, options);
        for (var i = 0; i < prompts.Length; i++)
        {
            Assert.Equal(generator.Generate([prompts[i]], options)[0].Tokens, batched[i].Tokens);
        }
    }

    [Fact]
    public void SamplingFollowsTopKTopPAndTheSeed()
    {
        using var g1 = new torch.Generator(7);
        using var logits = tensor(new float[,] { { 5f, 4f, 1f, 0f, -1f } });
        var greedy = TextGenerator.Sample(logits, new GenerationOptions(), g1).item<long>();
        Assert.Equal(0, greedy);
        var topK = Enumerable.Range(0, 200).Select(_ => TextGenerator.Sample(logits, new GenerationOptions { Temperature = 1, TopK = 2 }, g1).item<long>()).ToHashSet();
        Assert.Equal([0L, 1L], topK.Order());
        // softmax(5,4,1,0,-1) ≈ (.70, .26, .013, ...): top-p 0.5 keeps only the first token.
        var topP = Enumerable.Range(0, 100).Select(_ => TextGenerator.Sample(logits, new GenerationOptions { Temperature = 1, TopP = 0.5 }, g1).item<long>()).ToHashSet();
        Assert.Equal([0L], topP);
        using var a = new torch.Generator(11);
        using var b = new torch.Generator(11);
        var options = new GenerationOptions { Temperature = 2 };
        Assert.Equal(Enumerable.Range(0, 20).Select(_ => TextGenerator.Sample(logits, options, a).item<long>()),
                     Enumerable.Range(0, 20).Select(_ => TextGenerator.Sample(logits, options, b).item<long>()));
    }

    [Fact]
    public void StopSequencesAndEosEndAContinuation()
    {
        using var model = TinyModels.Create("gpt2");
        var generator = new TextGenerator(model, Words);
        var free = generator.Generate(["w5 w9"], new GenerationOptions { MaxNewTokens = 10, StopAtEos = false })[0];
        Assert.Equal(10, free.Tokens.Count);
        var stopWord = Words.Decode([free.Tokens[3]]);
        var stopped = generator.Generate(["w5 w9"], new GenerationOptions { MaxNewTokens = 10, StopAtEos = false, StopSequences = [stopWord] })[0];
        Assert.Equal("stop sequence", stopped.StopReason);
        Assert.Equal(stopWord, Words.Decode([stopped.Tokens[^1]]));
        Assert.True(stopped.Tokens.Count <= 4);
    }

}

/// <summary>RSS is per process: this runs alone, never beside other tests that allocate.</summary>
[CollectionDefinition("memory", DisableParallelization = true)]
public sealed class MemoryCollection;

[Collection("memory")]
public sealed class MemoryTests(ITestOutputHelper output)
{
    [Fact]
    public void FiveHundredForwardsKeepLiveTensorsAndRssBounded()
    {
        using var model = new HookedTransformer(TinyModels.Gpt2 with { DModel = 128, NHeads = 4, DMlp = 512, DVocab = 512, NCtx = 64 }).InitWeights(1);
        using var tokens = randint(0, 512, [4, 64], dtype: ScalarType.Int64);
        long Rss() => long.Parse(File.ReadAllText("/proc/self/statm").Split(' ')[1]) * Environment.SystemPageSize;
        for (var i = 0; i < 50; i++)
        {
            using var warm = model.Forward(tokens); // warm-up: allocator pools, JIT
        }
        var live = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var rss = Rss();
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < 500; i++)
        {
            using var logits = model.Forward(tokens);
            if (i % 100 == 0)
            {
                var (l, c) = model.RunWithCache(tokens);
                l.Dispose();
                c.Dispose();
            }
        }
        var growth = (Rss() - rss) / 1024.0 / 1024.0;
        var liveAfter = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        output.WriteLine($"500 forwards in {clock.Elapsed.TotalSeconds:F1} s: RSS growth {growth:F1} MiB, live tensors {live} → {liveAfter}");
        Assert.True(liveAfter - live <= 2, $"live tensors grew from {live} to {liveAfter}");
        Assert.True(growth < 64, $"RSS grew {growth:F1} MiB over 500 forwards");
    }
}
