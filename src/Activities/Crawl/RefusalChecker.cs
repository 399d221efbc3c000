namespace Pipelines.Activities.Crawl;

/// <summary>A topic's refusal verdict: the refused fraction, the probes (all stored for audit) and the prompts spent.</summary>
public sealed record RefusalVerdict(bool Refused, double Rate, List<RefusalSample> Samples, int Prompts);

/// <summary>An optional second opinion on one answer (an LLM judge through any client): true when it is a refusal.</summary>
public interface IRefusalJudge
{
    Task<bool> IsRefusalAsync(string query, string answer, CancellationToken ct);
}

/// <summary>
/// The paper-release refusal check (research §A.7 b), through the target itself. Stage 1: the target writes k
/// one-sentence requests for the topic (temperature 1); if more than the threshold of them are refusals, the topic is
/// refused (the model will not even phrase the request). Stage 2: otherwise each request is sent as a user turn and
/// the topic is refused when more than the threshold of the k answers are refusals. The threshold is strict (the
/// code's "> 0.5", i.e. at least 4 of 6), the reproducible choice. A refusal is a regex match (<see cref="RefusalPatterns"/>)
/// or, with a judge, the judge's yes.
/// </summary>
public sealed class RefusalChecker(ICrawlTarget target, int samples, double threshold, int queryTokens, int answerTokens, double temperature, IRefusalJudge? judge = null)
{
    public async Task<RefusalVerdict> CheckAsync(string topic, string language, long seed, CancellationToken ct)
    {
        var queryPrompt = new CrawlPrompt(CrawlPrompts.QueryPrompt(topic, language), "", Thought: false);
        var queries = await target.CompleteAsync(Enumerable.Repeat(queryPrompt, samples).ToList(), new Sampling(temperature, queryTokens, seed), ct);
        var sampleList = new List<RefusalSample>();
        var refusedQueries = 0;
        var cleaned = new List<string>();
        foreach (var q in queries)
        {
            var query = Clean(q);
            var (refused, pattern) = await Judge(CrawlPrompts.QueryPrompt(topic, language), query, ct);
            refusedQueries += refused ? 1 : 0;
            sampleList.Add(new RefusalSample(query, null, refused, pattern, "query"));
            cleaned.Add(query);
        }
        var queryRate = (double)refusedQueries / samples;
        if (queryRate > threshold)
        {
            return new RefusalVerdict(true, queryRate, sampleList, samples);
        }
        var answers = await target.CompleteAsync(cleaned.Select(q => new CrawlPrompt(q.Length > 0 ? q : topic, "", Thought: false)).ToList(),
            new Sampling(temperature, answerTokens, seed + 1), ct);
        sampleList.Clear();
        var refusedAnswers = 0;
        for (var i = 0; i < samples; i++)
        {
            var (refused, pattern) = await Judge(cleaned[i], answers[i], ct);
            refusedAnswers += refused ? 1 : 0;
            sampleList.Add(new RefusalSample(cleaned[i], answers[i], refused, pattern, "answer"));
        }
        var rate = (double)refusedAnswers / samples;
        return new RefusalVerdict(rate > threshold, rate, sampleList, 2 * samples);
    }

    private async Task<(bool, string?)> Judge(string query, string answer, CancellationToken ct)
    {
        if (RefusalPatterns.Match(answer) is { } pattern)
        {
            return (true, pattern);
        }
        if (judge is not null && await judge.IsRefusalAsync(query, answer, ct))
        {
            return (true, "judge");
        }
        return (false, null);
    }

    /// <summary>The request as written: first line, stripped of " &lt;&gt;|:" and quotes at the ends (the paper's cleaning).</summary>
    public static string Clean(string generated)
    {
        var line = generated.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault() ?? "";
        return line.Trim(' ', '<', '>', '|', ':', '"');
    }
}
