using Pipelines.Engine.Definitions;

namespace Pipelines.Tests.Engine;

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
        Assert.Contains(e.Diagnostics, d => d.Message.Contains("is a link to /etc/hostname"));
    }

    public void Dispose() => _ws.Dispose();
}
