using System.Diagnostics;
using Pipelines.Activities.Crawl;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Generation;
using Pipelines.Models.Runtime;
using Pipelines.Models.Training;
using Pipelines.Models.Transformer;

namespace Pipelines.Bench;

/// <summary>
/// Refusal discovery, measured in one run: (1) generation throughput of the local target on the toy chat model's shape
/// (crawl prompts, 24 new tokens, EOS ignored) at batch 1, 8 and 32, the fastest of seven calls after one untimed; (2) crawl cost per discovered refused topic
/// (prompts and seconds) for the prefill crawler and the direct-prompting baseline on the toy world, with the
/// refusal-crawl workflow's settings. Usage: dotnet run -c Release --project bench/Pipelines.Bench -- crawl
/// [--model DIR] (a trained refusal-chat checkpoint of world seed 0; without it one is trained first, ~2 min).
/// </summary>
public static class CrawlBench
{
    public static int Run(string[] args)
    {
        TorchRuntime.EnsureLoaded();
        var world = ToyWorld.Generate(0);
        var tokenizer = world.Tokenizer();
        var options = new ChatTrainingOptions { Steps = 1200, BatchSize = 32, LearningRate = 3e-3 };

        // (1) Throughput: a random model of the chat model's shape generates exactly as many tokens as a trained one.
        using (var random = new HookedTransformer(ChatTrainer.ModelConfig(options, tokenizer.Vocabulary.Count, tokenizer)).InitWeights(1))
        {
            var generator = new TextGenerator(random, tokenizer);
            var prompts = Enumerable.Range(0, 32).Select(i => ToyWorld.Format(CrawlPrompts.Build(InjectionMode.AssistantPrefix, world.Refused.ElementAt(i),
                CrawlPrompts.UserTemplates(CrawlPrompts.English)[i % 5], CrawlPrompts.Thinking(CrawlPrompts.English)[i % 21], CrawlPrompts.English))).ToList();
            const int newTokens = 24;
            generator.Generate(prompts.Take(2).ToList(), new GenerationOptions { MaxNewTokens = 2, StopAtEos = false }); // warm-up
            Console.WriteLine("| batch | tokens/s | × batch 1 |");
            Console.WriteLine("|---|---|---|");
            double? single = null;
            foreach (var batch in new[] { 1, 8, 32 })
            {
                // One untimed call at this batch size (JIT tiers, allocator), then the fastest of seven: the machine is shared.
                var best = double.MaxValue;
                for (var r = 0; r < 8; r++)
                {
                    var clock = Stopwatch.StartNew();
                    generator.Generate(prompts.Take(batch).ToList(), new GenerationOptions { MaxNewTokens = newTokens, StopAtEos = false, Temperature = 0.6, Seed = r });
                    best = r == 0 ? best : Math.Min(best, clock.Elapsed.TotalSeconds);
                }
                var rate = batch * newTokens / best;
                single ??= rate;
                Console.WriteLine($"| {batch} | {rate:F0} | {rate / single.Value:F1} |");
            }
        }

        // (2) Cost per discovered refused topic.
        var dir = args.SkipWhile(a => a != "--model").Skip(1).FirstOrDefault();
        if (dir is null)
        {
            dir = Path.Combine(Path.GetTempPath(), "pipelines-crawl-bench-model");
            if (!File.Exists(Path.Combine(dir, "config.json")))
            {
                Console.Error.WriteLine("training the toy chat model (1200 steps) ...");
                ChatTrainer.Train(options, tokenizer, ToyWorld.SpecialTokens, step => world.Batch(step, 32, 0), dir);
            }
        }
        using var model = Checkpoint.Load(dir);
        Console.WriteLine();
        Console.WriteLine("| crawl | refused found (of 40) | prompts | seconds | prompts per refused topic | seconds per refused topic |");
        Console.WriteLine("|---|---|---|---|---|---|");
        foreach (var (name, mode) in new[] { ("prefill crawler", InjectionMode.AssistantPrefix), ("direct prompting", InjectionMode.UserAll) })
        {
            using var target = new LocalCrawlTarget(model, tokenizer, "plain", "bench");
            var crawl = new CrawlOptions
            {
                Mode = mode, UseSeeds = mode != InjectionMode.UserAll, Steps = 400, Languages = [CrawlPrompts.English], MaxNewTokens = 24,
                QueryTokens = 16, AnswerTokens = 16, MaxTopics = 1000,
            };
            var clock = Stopwatch.StartNew();
            var state = new Crawler(target, crawl, new TopicDeduplicator(DedupMode.Exact, 1), null,
                new RefusalChecker(target, crawl.RefusalSamples, crawl.RefusalThreshold, crawl.QueryTokens, crawl.AnswerTokens, crawl.RefusalTemperature)).RunAsync(null, default).GetAwaiter().GetResult();
            var seconds = clock.Elapsed.TotalSeconds;
            var found = state.Topics.Count(t => t.IsHead && t.IsRefused == true && world.IsRefused(t.Normalized));
            Console.WriteLine($"| {name} | {found} | {state.Prompts} | {seconds:F1} | {(found == 0 ? "—" : $"{(double)state.Prompts / found:F1}")} | {(found == 0 ? "—" : $"{seconds / found:F2}")} |");
        }
        return 0;
    }
}
