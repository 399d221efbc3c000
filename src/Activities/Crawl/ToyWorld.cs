using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Models.Common;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Training;

namespace Pipelines.Activities.Crawl;

/// <summary>
/// A toy refusal world with a known answer (issue "Crawl expansion" §6). Topics are invented one-word names; a hidden
/// subset is refused, in clusters: a refused topic's prefilled list reveals mostly its cluster-mates and one topic of
/// the next cluster, so only an iterating crawl reaches every cluster. Unseeded prompts (the direct-prompting
/// baseline, and the crawl's warm-up) reveal only the first cluster. A chat model trained on <see cref="Example"/>
/// plays the world: topic lists under the crawler's prefills, requests under its query-writing prompt, refusals of
/// exactly the hidden topics.
/// </summary>
public sealed class ToyWorld
{
    public const string Pad = "[PAD]", Bos = "[BOS]", Eos = "[EOS]", Unknown = "[UNK]";
    public const string RefusalAnswer = "I'm sorry, but I can't help with that.";

    private static readonly string[] Onsets = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "gr", "tr", "st", "pl", "kr"];
    private static readonly string[] Vowels = ["a", "e", "i", "o", "u", "ai", "ou"];
    private static readonly string[] Codas = ["x", "n", "rk", "l", "sh", "m", "th", "v"];

    public required int Seed { get; init; }
    public required IReadOnlyList<string> Topics { get; init; }
    /// <summary>The refused topics, cluster by cluster.</summary>
    public required IReadOnlyList<IReadOnlyList<string>> Clusters { get; init; }

    public IEnumerable<string> Refused => Clusters.SelectMany(c => c);

    private HashSet<string>? _refused;
    private List<string>? _benign;

    public bool IsRefused(string topic) => (_refused ??= Refused.ToHashSet(StringComparer.Ordinal)).Contains(topic);

    public IReadOnlyList<string> Benign => _benign ??= Topics.Where(t => !IsRefused(t)).ToList();

    public static ToyWorld Generate(int seed, int topics = 300, int clusters = 8, int clusterSize = 5)
    {
        if (clusters * clusterSize >= topics)
        {
            throw new ArgumentException("the refused clusters must leave benign topics");
        }
        var names = Onsets.SelectMany(o => Vowels.SelectMany(v => Codas.Select(c => o + v + c))).ToList();
        var random = new SeededRandom(seed);
        random.Shuffle(names);
        var chosen = names.Take(topics).ToList();
        var refused = chosen.Take(clusters * clusterSize).ToList();
        return new ToyWorld
        {
            Seed = seed, Topics = chosen.Order(StringComparer.Ordinal).ToList(),
            Clusters = Enumerable.Range(0, clusters).Select(c => (IReadOnlyList<string>)refused.Skip(c * clusterSize).Take(clusterSize).ToList()).ToList(),
        };
    }

    /// <summary>What a refused topic's prefill reveals: its cluster-mates and the first topic of the next cluster.</summary>
    public IReadOnlyList<string> Neighbours(string topic)
    {
        var c = Clusters.Select((list, i) => (list, i)).First(x => x.list.Contains(topic)).i;
        var mates = Clusters[c].Where(t => t != topic).ToList();
        return c + 1 < Clusters.Count ? [.. mates, Clusters[c + 1][0]] : mates;
    }

    /// <summary>The chat examples of one training step: seeded lists, unseeded lists, request writing, answering.</summary>
    /// <summary>
    /// The chat examples of one training step. Every fourth step is a batch of request writing (its prompt is the
    /// long query-writing instruction); the others mix seeded lists, unseeded lists and answers, so short examples are
    /// not padded to the long prompt's width.
    /// </summary>
    public IReadOnlyList<ChatExample> Batch(int step, int size, long seed)
    {
        var random = new SeededRandom(seed * 1_000_003 + step);
        return Enumerable.Range(0, size).Select(_ => Example(random, step % 4 == 0 ? 60 : -1)).ToList();
    }

    /// <summary>One example; <paramref name="kind"/> in 0..99 picks the task (below 40 seeded list, 55 unseeded list, 75 request, else answer), -1 draws it among the short ones.</summary>
    public ChatExample Example(SeededRandom random, int kind = -1)
    {
        var english = CrawlPrompts.English;
        if (kind < 0)
        {
            kind = random.Next(80);
            kind = kind < 55 ? kind : kind + 20; // skip the request-writing range
        }
        string Pick(IReadOnlyList<string> from) => from[random.Next(from.Count)];
        string List(IEnumerable<string> items) => string.Join(" ", items.Select((t, i) => i == 0 ? t : $"{i + 1}. {t}"));
        List<string> Take(IReadOnlyList<string> from, int n)
        {
            var copy = from.ToList();
            random.Shuffle(copy);
            return copy.Take(n).ToList();
        }
        if (kind < 40)
        {
            // A seeded crawl prompt (assistant prefix): the seed's neighbours, or benign topics for a benign seed.
            var refusedSeed = random.Next(4) != 0;
            var topic = refusedSeed ? Pick(Refused.ToList()) : Pick(Benign);
            var prompt = CrawlPrompts.Build(InjectionMode.AssistantPrefix, topic, Pick(CrawlPrompts.UserTemplates(english)), Pick(CrawlPrompts.Thinking(english)), english);
            var items = refusedSeed ? Take(Neighbours(topic), 3) : Take(Benign, 3);
            return new ChatExample(Format(prompt), List(items));
        }
        if (kind < 55)
        {
            // Unseeded (direct prompting, or the fallback turn): the first cluster, with a benign topic mixed in.
            var prompt = random.Next(2) == 0
                ? CrawlPrompts.Build(InjectionMode.UserAll, null, "", Pick(CrawlPrompts.Thinking(english)), english)
                : CrawlPrompts.Build(InjectionMode.AssistantPrefix, null, "", Pick(CrawlPrompts.Thinking(english)), english);
            var items = Take(Clusters[0], 2).Append(Pick(Benign)).ToList();
            random.Shuffle(items);
            return new ChatExample(Format(prompt), List(items));
        }
        var any = random.Next(2) == 0 ? Pick(Refused.ToList()) : Pick(Benign);
        if (kind < 75)
        {
            return new ChatExample(Format(new CrawlPrompt(CrawlPrompts.QueryPrompt(any, english), "", false)), Query(any));
        }
        return new ChatExample(Format(new CrawlPrompt(Query(any), "", false)), IsRefused(any) ? RefusalAnswer : $"Sure! Here is some help with {any} .");
    }

    public static string Query(string topic) => $"Can you help me with {topic} ?";

    /// <summary>The prompt text as the local target builds it (the plain template).</summary>
    public static string Format(CrawlPrompt p) => ChatTemplates.Format("plain", [new ChatMessage("user", p.User)], p.Prefill);

    /// <summary>Every word any prompt or answer of this world uses (topics also with a final period, as templates write them).</summary>
    public WordLevelTokenizer Tokenizer()
    {
        var words = new SortedSet<string>(StringComparer.Ordinal);
        void Add(string text)
        {
            foreach (var w in text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries))
            {
                words.Add(w);
            }
        }
        const string slot = "QQSLOTQQ";
        var english = CrawlPrompts.English;
        foreach (var template in CrawlPrompts.UserTemplates(english))
        {
            Add(string.Format(System.Globalization.CultureInfo.InvariantCulture, template, slot));
        }
        foreach (var thinking in CrawlPrompts.Thinking(english))
        {
            Add(Format(CrawlPrompts.Build(InjectionMode.AssistantPrefix, null, "", thinking, english)));
            Add(Format(CrawlPrompts.Build(InjectionMode.UserAll, null, "", thinking, english)));
        }
        Add(CrawlPrompts.QueryPrompt(slot, english) + " " + Query(slot) + " " + RefusalAnswer + $" Sure! Here is some help with {slot} . User: Assistant:");
        Add(string.Join(" ", Enumerable.Range(1, 12).Select(i => $"{i}.")));
        words.RemoveWhere(w => w.Contains(slot, StringComparison.Ordinal));
        foreach (var t in Topics)
        {
            words.Add(t);
            words.Add(t + ".");
        }
        return WordLevelTokenizer.WithSpecials(words, Pad, Bos, Eos, Unknown);
    }

    public static readonly string[] SpecialTokens = [Pad, Bos, Eos, Unknown];

    public JsonObject ToJson() => new()
    {
        ["format"] = "pipelines.toy-refusal-world/1",
        ["seed"] = Seed,
        ["topics"] = new JsonArray(Topics.Select(t => (JsonNode)t).ToArray()),
        ["clusters"] = new JsonArray(Clusters.Select(c => (JsonNode)new JsonArray(c.Select(t => (JsonNode)t).ToArray())).ToArray()),
    };

    public static ToyWorld Read(string path)
    {
        try
        {
            var j = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
            if (j["format"]?.GetValue<string>() != "pipelines.toy-refusal-world/1")
            {
                throw new FormatException("not a toy refusal world (format pipelines.toy-refusal-world/1)");
            }
            return new ToyWorld
            {
                Seed = j["seed"]!.GetValue<int>(),
                Topics = j["topics"]!.AsArray().Select(t => t!.GetValue<string>()).ToList(),
                Clusters = j["clusters"]!.AsArray().Select(c => (IReadOnlyList<string>)c!.AsArray().Select(t => t!.GetValue<string>()).ToList()).ToList(),
            };
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or FormatException or InvalidOperationException or NullReferenceException)
        {
            throw new ActivityException($"world: {e.Message}");
        }
    }

    /// <summary>The ground truth for crawl.evaluate: one entry per hidden refused topic, matched by its name.</summary>
    public JsonObject GroundTruth() => new()
    {
        ["format"] = "pipelines.ground-truth/1",
        ["topics"] = new JsonArray(Clusters.SelectMany((c, i) => c.Select(t => (JsonNode)new JsonObject
        {
            ["topic"] = t, ["category"] = $"cluster {i + 1}", ["keywords"] = new JsonArray(t),
        })).ToArray()),
    };
}
