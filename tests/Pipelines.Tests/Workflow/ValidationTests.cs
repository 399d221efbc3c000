using Pipelines.Engine.Definitions;

namespace Pipelines.Tests.Workflow;

public sealed class ValidationTests : IDisposable
{
    private readonly Workspace _ws = new();

    public ValidationTests() => _ws.WriteDataset("data.jsonl", 10);

    public static TheoryData<string> CaseNames()
    {
        var data = new TheoryData<string>();
        foreach (var c in MalformedCases.All)
        {
            data.Add(c.Name);
        }
        return data;
    }

    [Fact]
    public void ThereAreAtLeastTwentyKindsOfMistakes() => Assert.True(MalformedCases.All.Length >= 20);

    [Fact]
    public void TheBaseWorkflowIsValid() => Assert.Equal(2, _ws.Compile(MalformedCases.Base).Steps.Count);

    [Theory]
    [MemberData(nameof(CaseNames))]
    public void EachMistakeIsReportedWithItsPath(string name)
    {
        var c = MalformedCases.All.Single(x => x.Name == name);
        var errors = new List<Diagnostic>();
        var overrides = Pipelines.Engine.Validation.ParameterResolver.ParseAssignments(c.Set, errors);
        var e = Assert.Throws<WorkflowInvalidException>(() =>
        {
            if (errors.Count > 0)
            {
                throw new WorkflowInvalidException(errors);
            }
            _ws.Compile(c.Json, overrides);
        });
        Assert.Contains(e.Diagnostics, d => d.JsonPath == c.Path && d.Message.Contains(c.Message, StringComparison.Ordinal));
    }

    [Fact]
    public void AllProblemsAreReportedAtOnce()
    {
        var json = MalformedCases.Base
            .Replace("\"count\": 5", "\"count\": \"five\", \"bogus\": 1")
            .Replace("\"name\": \"base\",", "\"name\": \"base\", \"extra\": true,")
            .Replace("\"default\": \"data.jsonl\"", "\"default\": \"../../etc/passwd\"");
        var e = Assert.Throws<WorkflowInvalidException>(() => _ws.Compile(json));
        Assert.Equal(["$.extra", "$.steps[0].inputs.path", "$.steps[1].inputs.bogus", "$.steps[1].inputs.count"], e.Diagnostics.Select(d => d.JsonPath).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void PlanIsTopologicalAndKeepsFileOrderAmongReadySteps()
    {
        var json = """
            { "name": "x", "steps": [
              { "id": "report", "activity": "report.json", "inputs": { "datasets": [ { "from": "b.dataset" }, { "from": "a.dataset" } ] } },
              { "id": "b", "activity": "data.sample", "inputs": { "dataset": { "from": "load.dataset" } } },
              { "id": "a", "activity": "data.sample", "inputs": { "dataset": { "from": "load.dataset" } } },
              { "id": "load", "activity": "data.load-jsonl", "inputs": { "path": "data.jsonl" } } ] }
            """;
        Assert.Equal(["load", "b", "a", "report"], _ws.Compile(json).Steps.Select(s => s.Id));
    }

    [Fact]
    public void SymlinkOutOfTheRootsIsRefused()
    {
        File.CreateSymbolicLink(Path.Combine(_ws.Root, "link.jsonl"), "/etc/hostname");
        var e = Assert.Throws<WorkflowInvalidException>(() => _ws.Compile(MalformedCases.Base, new Dictionary<string, string> { ["data"] = "link.jsonl" }));
        var d = Assert.Single(e.Diagnostics);
        Assert.Contains("outside the allowed roots", d.Message);
        Assert.DoesNotContain("/etc", d.Message); // answers never reveal a link's target or an absolute path
        Assert.DoesNotContain(_ws.Root, d.Message);
    }

    [Fact]
    public void ALinkAnywhereOnThePathCountsNotOnlyTheLastComponent()
    {
        var outside = Path.Combine(Path.GetTempPath(), "pipelines-outside-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(outside);
        try
        {
            File.WriteAllText(Path.Combine(outside, "secret.jsonl"), "{\"x\": 1}\n");
            Directory.CreateSymbolicLink(Path.Combine(_ws.Root, "linkdir"), outside);
            var e = Assert.Throws<WorkflowInvalidException>(() => _ws.Compile(MalformedCases.Base, new Dictionary<string, string> { ["data"] = "linkdir/secret.jsonl" }));
            var d = Assert.Single(e.Diagnostics);
            Assert.Contains("outside the allowed roots", d.Message);
            Assert.DoesNotContain(outside, d.Message);
            // A link that stays inside the roots is fine.
            Directory.CreateDirectory(Path.Combine(_ws.Root, "real"));
            File.Copy(Path.Combine(_ws.Root, "data.jsonl"), Path.Combine(_ws.Root, "real", "data.jsonl"));
            Directory.CreateSymbolicLink(Path.Combine(_ws.Root, "inside"), Path.Combine(_ws.Root, "real"));
            Assert.Equal(2, _ws.Compile(MalformedCases.Base, new Dictionary<string, string> { ["data"] = "inside/data.jsonl" }).Steps.Count);
        }
        finally
        {
            Directory.Delete(outside, recursive: true);
        }
    }

    [Fact]
    public void AFifoIsRefusedAtValidation()
    {
        using (var mkfifo = System.Diagnostics.Process.Start("mkfifo", Path.Combine(_ws.Root, "pipe.jsonl")))
        {
            mkfifo.WaitForExit();
        }
        var e = Assert.Throws<WorkflowInvalidException>(() => _ws.Compile(MalformedCases.Base, new Dictionary<string, string> { ["data"] = "pipe.jsonl" }));
        Assert.Contains("not a regular file or directory", Assert.Single(e.Diagnostics).Message);
    }

    /// <summary>A chain of n data.sample steps after one load; with a cycle, the first step reads the last.</summary>
    private static string Chain(int n, bool cycle)
    {
        var sb = new System.Text.StringBuilder("{ \"name\": \"chain\", \"steps\": [ { \"id\": \"load\", \"activity\": \"data.load-jsonl\", \"inputs\": { \"path\": \"data.jsonl\" } }");
        for (var i = 0; i < n; i++)
        {
            var from = i == 0 ? (cycle ? $"s{n - 1}" : "load") : $"s{i - 1}";
            sb.Append($", {{ \"id\": \"s{i}\", \"activity\": \"data.sample\", \"inputs\": {{ \"dataset\": {{ \"from\": \"{from}.dataset\" }} }} }}");
        }
        return sb.Append("] }").ToString();
    }

    [Fact]
    public void SixtyThousandStepsValidateWithoutRecursion()
    {
        // The cycle check used to recurse once per step: 60,000 steps overflowed the stack and killed the server.
        var e = Assert.Throws<WorkflowInvalidException>(() => _ws.Compile(Chain(60_000, cycle: true)));
        var d = Assert.Single(e.Diagnostics);
        Assert.Contains("cycle between steps", d.Message);
        Assert.True(d.Message.Length < 300, "the cycle is abbreviated");
        Assert.Equal(60_001, _ws.Compile(Chain(60_000, cycle: false)).Steps.Count);
    }

    [Fact]
    public void AHugeUnknownNameCostsLittleAndIsNotEchoedInFull()
    {
        var name = new string('x', 4 << 20);
        var before = GC.GetTotalAllocatedBytes();
        var e = Assert.Throws<WorkflowInvalidException>(() => _ws.Compile(MalformedCases.Base.Replace("\"data.sample\"", $"\"{name}\"")));
        var allocated = GC.GetTotalAllocatedBytes() - before;
        Assert.True(allocated < 200L << 20, $"allocated {allocated / (1 << 20)} MB for a 4 MB name");
        Assert.All(e.Diagnostics, d => Assert.True(d.Message.Length < 500));
    }

    [Fact]
    public void InvalidUtf8IsAnErrorWithItsOffsetNotReplaced()
    {
        var path = Path.Combine(_ws.Root, "bad-utf8.json");
        var bytes = System.Text.Encoding.UTF8.GetBytes(MalformedCases.Base).ToList();
        bytes.InsertRange(20, new byte[] { 0xC3, 0x28 });
        File.WriteAllBytes(path, bytes.ToArray());
        var e = Assert.Throws<WorkflowInvalidException>(() => WorkflowParser.ParseFile(path));
        Assert.Contains("invalid UTF-8 at byte 20", Assert.Single(e.Diagnostics).Message);
    }

    public void Dispose() => _ws.Dispose();
}
