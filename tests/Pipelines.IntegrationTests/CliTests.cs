using System.Diagnostics;
using System.Text.Json.Nodes;
using Pipelines.Tests.Workflow;

namespace Pipelines.IntegrationTests;

internal static partial class Native
{
    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "kill")]
    internal static partial int kill(int pid, int signal);

    /// <summary>
    /// Whether this process inherited SIGINT as ignored (a shell's background job, nohup): children inherit that, and
    /// .NET then leaves SIGINT ignored, as a shell expects. From the SigIgn mask in /proc/self/status.
    /// </summary>
    internal static bool SigintIgnored()
    {
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & 0x2) != 0;
    }
}

public sealed class CliTests : IDisposable
{
    private readonly Cli _cli = new();

    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        foreach (var c in MalformedCases.All)
        {
            data.Add(c.Name);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void MalformedWorkflowsExitWithCode2AndAClearMessage(string name)
    {
        var c = MalformedCases.All.Single(x => x.Name == name);
        _cli.WriteDataset("data.jsonl", 10);
        _cli.Write("bad.json", c.Json);
        var args = new List<string> { "run", "bad.json" };
        foreach (var s in c.Set)
        {
            args.Add("--set");
            args.Add(s);
        }
        var r = _cli.Run(args.ToArray());
        Assert.Equal(2, r.ExitCode);
        Assert.Contains(c.Path + ":", r.Stderr);
        Assert.Contains(c.Message, r.Stderr);
        Assert.Contains(c.Set.Length > 0 && !c.Path.StartsWith("$.steps") ? "--set" : "bad.json", r.Stderr);
        Assert.DoesNotContain("   at ", r.All); // never a stack trace
        Assert.DoesNotContain("Exception", r.All);
        Assert.False(Directory.Exists(Path.Combine(_cli.Store, "runs")) && Directory.EnumerateDirectories(Path.Combine(_cli.Store, "runs")).Any(), "nothing may run");
    }

    [Fact]
    public void CommandLineMistakesExitWithCode2()
    {
        Assert.Equal(2, _cli.Run("run").ExitCode);
        Assert.Equal(2, _cli.Run("frobnicate").ExitCode);
        Assert.Equal(2, _cli.Run("run", "missing.json").ExitCode);
        Assert.Equal(2, _cli.Run("runs", "show", "nope").ExitCode);
        Assert.Equal(2, _cli.Run("activities", "describe", "nope").ExitCode);
        Assert.Equal(2, _cli.Run("run", "x.json", "--parallel", "many").ExitCode);
        var zero = _cli.Run("run", "x.json", "--parallel", "0");
        Assert.Equal(2, zero.ExitCode);
        Assert.Contains("--parallel: expected an integer ≥ 1", zero.Stderr);
        var list = _cli.Run("activities"); // the errors point here: it lists, it does not fail
        Assert.Equal(0, list.ExitCode);
        Assert.Contains("circuits.attribute", list.Stdout);
    }

    [Fact]
    public void SecondRunComputesNothingSaysSoAndTakesAFractionOfTheTime()
    {
        _cli.WriteDataset("data.jsonl", 150_000);
        _cli.Write("chain.json", WorkflowFiles.Chain);
        var first = _cli.Run("run", "chain.json");
        Assert.True(first.ExitCode == 0, first.All);
        Assert.Contains("4 computed, 0 cached", first.Stdout);
        var second = _cli.Run("run", "chain.json");
        Assert.Equal(0, second.ExitCode);
        Assert.Contains("nothing to compute: all 4 steps were cached", second.Stdout);

        // The engine's own clock for each run (start to end in the ledger), not process start-up.
        double Seconds(string id)
        {
            var run = _cli.Show(id);
            return (run["endedAt"]!.GetValue<DateTimeOffset>() - run["startedAt"]!.GetValue<DateTimeOffset>()).TotalSeconds;
        }
        var ratio = Seconds(Cli.RunId(second.Stdout)) / Seconds(Cli.RunId(first.Stdout));
        Assert.True(ratio < 0.35, $"cached run took {ratio:P0} of the first run's time");
        Assert.Equal(_cli.Digests(Cli.RunId(first.Stdout)), _cli.Digests(Cli.RunId(second.Stdout)));

        var changed = _cli.Run("run", "chain.json", "--set", "fraction=0.5");
        Assert.Contains("2 computed, 2 cached", changed.Stdout);
        var why = _cli.Run("why", Cli.RunId(changed.Stdout), "split");
        Assert.Equal(0, why.ExitCode);
        Assert.Contains("input \"trainFraction\": 0.8 -> 0.5", why.Stdout);
        var whyReport = _cli.Run("why", Cli.RunId(changed.Stdout), "report");
        Assert.Contains("input artifact \"datasets\"", whyReport.Stdout);
        var whyLoad = _cli.Run("why", Cli.RunId(changed.Stdout), "load");
        Assert.Contains("unchanged", whyLoad.Stdout);
    }

    [Fact]
    public void KilledRunResumesToTheSameDigestsAsAnUninterruptedRun()
    {
        _cli.WriteDataset("data.jsonl", 300_000);
        _cli.Write("chain.json", WorkflowFiles.Chain);
        var (process, output) = _cli.StartUntil(line => line.Contains("computed load"), "run", "chain.json", "--parallel", "1");
        process.Kill(); // SIGKILL: no cleanup, no bookkeeping
        process.WaitForExit();
        var runId = Cli.RunId(output.ToString());
        var killed = _cli.Show(runId);
        Assert.Equal("running", killed["status"]!.GetValue<string>()); // the ledger saw no end
        Assert.Contains(killed["steps"]!.AsArray(), s => s!["status"]!.GetValue<string>() != "computed");

        var resumed = _cli.Run("resume", runId);
        Assert.True(resumed.ExitCode == 0, resumed.All);
        var after = _cli.Show(runId);
        Assert.Equal("succeeded", after["status"]!.GetValue<string>());
        Assert.Equal("cached", after["steps"]![0]!["status"]!.GetValue<string>());

        using var clean = new Cli();
        File.Copy(Path.Combine(_cli.Root, "data.jsonl"), Path.Combine(clean.Root, "data.jsonl"));
        clean.Write("chain.json", WorkflowFiles.Chain);
        var uninterrupted = clean.Run("run", "chain.json");
        Assert.Equal(0, uninterrupted.ExitCode);
        Assert.Equal(clean.Digests(Cli.RunId(uninterrupted.Stdout)), _cli.Digests(runId));
    }

    [Fact]
    public void CtrlCCancelsKeepsFinishedStepsAndResumeFinishes()
    {
        _cli.WriteDataset("data.jsonl", 300_000);
        _cli.Write("chain.json", WorkflowFiles.Chain);
        var (process, output) = _cli.StartUntil(line => line.Contains("computed load"), "run", "chain.json", "--parallel", "1");
        // SIGINT, as Ctrl+C sends. Where the test runner inherited SIGINT as ignored (a background CI job), the CLI
        // inherits that too, so the same cancellation is driven by SIGTERM, which takes the same handler.
        var signal = Native.SigintIgnored() ? 15 : 2;
        Assert.Equal(0, Native.kill(process.Id, signal));
        Assert.True(process.WaitForExit(60_000));
        Assert.True(process.ExitCode == 1, $"signal {signal}, exit code {process.ExitCode}; output:\n{output}");
        var runId = Cli.RunId(output.ToString());
        var run = _cli.Show(runId);
        Assert.Equal("cancelled", run["status"]!.GetValue<string>());
        Assert.Equal("computed", run["steps"]![0]!["status"]!.GetValue<string>());
        Assert.Contains("pipelines resume", output.ToString());

        var resumed = _cli.Run("resume", runId);
        Assert.Equal(0, resumed.ExitCode);
        Assert.Contains("cached", resumed.Stdout);
    }

    [Fact]
    public void ReproduceReportsEveryDigestEqualAndExitsNonZeroOnAMismatch()
    {
        _cli.WriteDataset("data.jsonl", 2_000);
        _cli.Write("chain.json", WorkflowFiles.Chain);
        var run = _cli.Run("run", "chain.json");
        var runId = Cli.RunId(run.Stdout);
        var reproduced = _cli.Run("reproduce", runId);
        Assert.True(reproduced.ExitCode == 0, reproduced.All);
        Assert.Equal(5, reproduced.Stdout.Split('\n').Count(l => l.Contains("✔ equal")));
        Assert.Contains("every output digest equals", reproduced.Stdout);
        Assert.DoesNotContain("MISMATCH", reproduced.Stdout);
        var reproId = _cli.Show(runId); // original unchanged
        Assert.Equal("succeeded", reproId["status"]!.GetValue<string>());

        _cli.WriteDataset("data.jsonl", 2_000, seed: 5); // the source changed under the recorded run
        var mismatch = _cli.Run("reproduce", runId);
        Assert.Equal(1, mismatch.ExitCode);
        Assert.Contains("MISMATCH", mismatch.Stdout);
    }

    [Fact]
    public void ListsDescribesAndPrintsTheSchema()
    {
        var list = _cli.Run("activities", "list");
        Assert.Equal(0, list.ExitCode);
        foreach (var type in new[] { "data.load-jsonl", "data.sample", "data.split", "report.json" })
        {
            Assert.Contains(type, list.Stdout);
        }
        var describe = _cli.Run("activities", "describe", "data.split");
        Assert.Contains("trainFraction", describe.Stdout);
        Assert.Contains("0.8", describe.Stdout);
        var json = JsonNode.Parse(_cli.Run("activities", "list", "--json").Stdout)!.AsArray();
        // The JSON listing and the table name the same activities, every family's among them.
        var types = json.Select(a => a!["type"]!.GetValue<string>()).ToList();
        Assert.Equal(types.Count, types.Distinct().Count());
        Assert.All(types, t => Assert.Contains(t, list.Stdout));
        Assert.Subset(types.ToHashSet(), new HashSet<string> { "data.split", "model.load", "circuits.attribute", "schema.apply", "schema.generate", "report.circuit" });
        var schema = _cli.Run("schema");
        Assert.Equal(File.ReadAllText(Path.Combine(RepoRoot(), "workflows", "workflow.schema.json")), schema.Stdout);
    }

    [Fact]
    public void RunsListAndShowAndGc()
    {
        _cli.WriteDataset("data.jsonl", 500);
        _cli.Write("chain.json", WorkflowFiles.Chain);
        var a = Cli.RunId(_cli.Run("run", "chain.json", "--set", "fraction=0.3").Stdout);
        var b = Cli.RunId(_cli.Run("run", "chain.json", "--set", "fraction=0.6").Stdout);
        var list = _cli.Run("runs", "list");
        Assert.True(list.Stdout.IndexOf(b, StringComparison.Ordinal) < list.Stdout.IndexOf(a, StringComparison.Ordinal), "newest first");
        var show = _cli.Run("runs", "show", b);
        Assert.Contains("from " + a, show.Stdout); // cached steps name the run they came from
        var gc = _cli.Run("artifacts", "gc", "--keep-runs", "1");
        Assert.Equal(0, gc.ExitCode);
        Assert.Contains("removed 3 objects", gc.Stdout); // a's split.train, split.test and report
        var again = _cli.Run("run", "chain.json", "--set", "fraction=0.6");
        Assert.Contains("nothing to compute", again.Stdout);
    }

    private static string RepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Pipelines.sln")))
        {
            dir = dir.Parent;
        }
        return dir!.FullName;
    }

    public void Dispose() => _cli.Dispose();
}
