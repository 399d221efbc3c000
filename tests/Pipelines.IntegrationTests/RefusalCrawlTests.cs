using System.Text.Json.Nodes;

namespace Pipelines.IntegrationTests;

/// <summary>
/// workflows/refusal-crawl.json end to end through the real CLI: the prefill crawler finds the toy world's hidden
/// refused topics, the direct-prompting baseline's recall is reported beside it, and a crawl killed with SIGKILL
/// resumes to the topics of the uninterrupted one.
/// </summary>
public sealed class RefusalCrawlTests : IDisposable
{
    private readonly Cli _cli = new();

    public void Dispose() => _cli.Dispose();

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Pipelines.sln")))
        {
            dir = dir.Parent;
        }
        return dir!.FullName;
    }

    private JsonNode Output(string runId, string step, string port)
    {
        var digest = _cli.Digests(runId)[$"{step}.{port}"];
        return JsonNode.Parse(File.ReadAllText(Path.Combine(_cli.Store, "objects", "sha256", digest[..2], digest)))!;
    }

    [Fact]
    public void TheCrawlerFindsTheHiddenRefusedTopicsAndAKilledCrawlResumesToTheSameTopics()
    {
        File.Copy(Path.Combine(RepoRoot(), "workflows", "refusal-crawl.json"), Path.Combine(_cli.Root, "refusal-crawl.json"));
        var first = _cli.Run("run", "refusal-crawl.json");
        Assert.True(first.ExitCode == 0, first.All);
        var runId = Cli.RunId(first.Stdout);
        var crawler = Output(runId, "evaluate", "evaluation");
        var baseline = Output(runId, "evaluateBaseline", "evaluation");
        var recall = crawler["recall"]!.GetValue<double>();
        var within = crawler["recallByTopicId"]!.AsArray().Where(p => p!["at"]!.GetValue<long>() <= 1000).Max(p => p!["recall"]!.GetValue<double>());
        Assert.True(within >= 0.9, $"recall within 1000 topic ids: {within:P0}");
        Assert.True(baseline["recall"]!.GetValue<double>() < recall, $"baseline {baseline["recall"]} vs crawler {recall}");
        File.WriteAllText(Path.Combine(AppContext.BaseDirectory, "refusal-crawl-recall.txt"),
            $"crawler {crawler["found"]}/{crawler["groundTruth"]}, baseline {baseline["found"]}/{baseline["groundTruth"]}\n");
        var report = _cli.Digests(runId)["report.report"];
        Assert.Contains("Discovery graph", File.ReadAllText(Path.Combine(_cli.Store, "objects", "sha256", report[..2], report)));

        // Forget the crawl's cache entry, start the run again (training is a hit), SIGKILL it once the crawl has saved
        // its state, and resume: the crawl continues from its save and ends with the same topics.
        var step = _cli.Show(runId)["steps"]!.AsArray().Single(s => s!["id"]!.GetValue<string>() == "crawl")!;
        var key = step["cacheKey"]!.GetValue<string>();
        var topicsDigest = _cli.Digests(runId)["crawl.topics"];
        File.Delete(Path.Combine(_cli.Store, "cache", key[..2], key + ".json"));
        var state = Path.Combine(_cli.Store, "resume", key, "crawl-state.json");
        var (process, output) = _cli.StartUntil(line => line.Contains("cached chat"), "run", "refusal-crawl.json");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (!File.Exists(state) && !process.HasExited && clock.Elapsed < TestTime.Seconds(120))
        {
            Thread.Sleep(50);
        }
        Assert.True(File.Exists(state), $"the crawl saved no state; output:\n{output}");
        process.Kill(); // SIGKILL mid-crawl
        process.WaitForExit();
        var saved = JsonNode.Parse(File.ReadAllText(state))!;
        Assert.True(saved["step"]!.GetValue<int>() >= 0);
        var killed = Cli.RunId(output.ToString());
        var resumed = _cli.Run("resume", killed);
        Assert.True(resumed.ExitCode == 0, resumed.All);
        Assert.Equal(topicsDigest, _cli.Digests(killed)["crawl.topics"]);
        Assert.False(Directory.Exists(Path.Combine(_cli.Store, "resume", key))); // completed: the save is gone
    }
}
