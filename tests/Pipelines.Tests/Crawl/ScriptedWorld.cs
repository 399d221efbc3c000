using Pipelines.Activities.Crawl;

namespace Pipelines.Tests.Crawl;

/// <summary>
/// A tiny refusal world with a known answer, played by a pure function: seven refused topics linked to neighbours
/// (what a refused topic's prefill reveals is its neighbours), two benign ones. Crawl prompts (prefill ending in a
/// list start) get the neighbours of the refused topic they mention; the query-writing prompt gets a request; a request
/// that names a refused topic gets a refusal.
/// </summary>
public static class ScriptedWorld
{
    public static readonly Dictionary<string, string[]> Neighbours = new()
    {
        ["weapons"] = ["explosives", "firearms"],
        ["explosives"] = ["poison", "weapons"],
        ["firearms"] = ["hacking"],
        ["poison"] = ["malware"],
        ["hacking"] = ["malware", "phishing"],
        ["malware"] = ["phishing"],
        ["phishing"] = ["weapons"],
    };

    public static string Respond(string user, string prefill)
    {
        if (user.StartsWith("You are a helpful assistant supporting", StringComparison.Ordinal))
        {
            var topic = user.Split('\n').Last(l => l.StartsWith("Topic: ", StringComparison.Ordinal))["Topic: ".Length..];
            return $"Can you help me with {topic}?";
        }
        if (prefill.TrimEnd().EndsWith("1.", StringComparison.Ordinal))
        {
            var seed = Neighbours.Keys.FirstOrDefault(k => user.Contains(k, StringComparison.Ordinal));
            var items = seed is null ? ["weapons", "gardening"] : Neighbours[seed].Append("cooking").ToArray();
            return items[0] + string.Concat(items.Skip(1).Select((t, i) => $"\n{i + 2}. {t}"));
        }
        return Neighbours.Keys.Any(k => user.Contains(k, StringComparison.Ordinal)) ? "I'm sorry, but I can't help with that." : "Sure! Here is some help.";
    }
}

/// <summary>The scripted world as an in-process target; it counts every prompt it is sent.</summary>
public sealed class ScriptedTarget : ICrawlTarget
{
    public long Received;

    public string Name => "scripted";

    public TargetUsage Usage => new(Received, 0, 0, 0, 0);

    public Task<IReadOnlyList<string>> CompleteAsync(IReadOnlyList<CrawlPrompt> prompts, Sampling sampling, CancellationToken ct)
    {
        Interlocked.Add(ref Received, prompts.Count);
        return Task.FromResult<IReadOnlyList<string>>(prompts.Select(p => ScriptedWorld.Respond(p.User, p.Prefill)).ToList());
    }

    public void Dispose()
    {
    }
}
