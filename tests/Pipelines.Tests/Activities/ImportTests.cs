using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Engine.Ledger;

namespace Pipelines.Tests.Activities;

public sealed class ImportTests : IDisposable
{
    private readonly Workspace _ws = new();

    private static string SharedData(string file)
    {
        var root = Pipelines.Tests.Workflow.SchemaTests.RepoRoot();
        return Path.GetFullPath(Path.Combine(root, "datasets", file));
    }

    private async Task<List<JsonObject>> Import(string path)
    {
        var json = $$"""{ "name": "import", "steps": [ { "id": "import", "activity": "data.import-counterfactual", "inputs": { "path": "{{path}}" } } ] }""";
        var plan = _ws.Compiler.CompileText(json, "w.json", new Dictionary<string, string>(), new Pipelines.Engine.Validation.PathPolicy(_ws.Root, [Path.GetDirectoryName(path)!]));
        var run = await _ws.Runner.RunAsync(plan, new Pipelines.Engine.Running.RunOptions { WorkflowFile = "w.json", WorkflowText = json, BaseDirectory = _ws.Root });
        Assert.True(run.Status == RunStatus.Succeeded, run.Steps[0].Error);
        return Jsonl.Read(_ws.Store.ObjectPath(run.Steps[0].Outputs["dataset"].Digest), "dataset");
    }

    [Fact]
    public async Task ImportsEapIgGreaterThanCsv()
    {
        var rows = await Import(SharedData("eap-ig/greater_than_data.csv"));
        Assert.Equal(1000, rows.Count);
        Assert.Equal("The contract lasted from the year 1352 to the year 13", rows[0]["clean"]!.GetValue<string>());
        Assert.Equal("The contract lasted from the year 1301 to the year 13", rows[0]["corrupted"]!.GetValue<string>());
        Assert.Equal(52, rows[0]["label"]!.GetValue<int>());
    }

    [Fact]
    public async Task ImportsEapIgIoiCsvWithTokenIdsAndQuotedCommas()
    {
        var rows = await Import(SharedData("eap-ig/ioi_llama.csv"));
        Assert.Equal(499, rows.Count); // the file has no trailing newline: 500 lines, 499 pairs (as Python's csv module reads it)
        Assert.Equal("Then, Aaron and Amber were working at the house. Aaron decided to give a drink to", rows[0]["clean"]!.GetValue<string>());
        Assert.Equal(47764, rows[0]["correct_idx"]!.GetValue<long>());
        Assert.Equal(26757, rows[0]["incorrect_idx"]!.GetValue<long>());
        Assert.Equal("470", rows[0]["source_index"]!.GetValue<string>());
        Assert.Contains("Tiffany", rows[0]["corrupted"]!.GetValue<string>());
    }

    [Fact]
    public void CsvHandlesQuotesEscapedQuotesAndNewlinesAndReportsBadRows()
    {
        var path = _ws.Write("a.csv", "clean,corrupted,label\n\"a, \"\"quoted\"\"\",\"two\nlines\",5\r\nplain,x,6\n");
        var (header, rows) = Csv.Read(path, "a.csv");
        Assert.Equal(["clean", "corrupted", "label"], header);
        Assert.Equal(["a, \"quoted\"", "two\nlines", "5"], rows[0]);
        Assert.Equal(["plain", "x", "6"], rows[1]);
        var bad = _ws.Write("b.csv", "clean,corrupted\na,b\nc,d,e\n");
        var e = Assert.Throws<Pipelines.Engine.Activities.ActivityException>(() => Csv.Read(bad, "b.csv"));
        Assert.Contains("b.csv, line 3: 3 fields, but the header has 2", e.Message);
    }

    [Fact]
    public async Task ImportsMibHuggingFaceRowsForIoiMcqaAndArithmetic()
    {
        // Rows in the layout of mib-bench/ioi, copycolors_mcqa and arithmetic_addition (research §6.1), as `to_json(lines=True)` writes them.
        var ioi = """{"prompt": "When Mary and John went to the store, John gave a drink to", "template": "t1", "choices": {"label": ["A", "B"], "text": ["Mary", "John"]}, "answerKey": 0, "metadata": {"subject": "John", "indirect_object": "Mary", "random_c": "Tom", "object": "drink", "place": "store"}, "s2_io_flip_counterfactual": {"prompt": "When Mary and John went to the store, Mary gave a drink to", "choices": {"label": ["A"], "text": ["John"]}, "answerKey": 0, "metadata": {}}, "abc_counterfactual": {"prompt": "When Tom and Ann went to the store, Bob gave a drink to"}}""";
        var rows = await Import(_ws.Write("ioi.jsonl", ioi + "\n"));
        Assert.Equal("When Mary and John went to the store, Mary gave a drink to", rows[0]["corrupted"]!.GetValue<string>());
        Assert.Equal(" Mary", rows[0]["correct"]!.GetValue<string>());
        Assert.Equal(" John", rows[0]["incorrect"]!.GetValue<string>());
        Assert.Equal("s2_io_flip_counterfactual", rows[0]["counterfactual"]!.GetValue<string>());

        var mcqa = """{"prompt": "Q: color of the sky? A. red B. blue\nAnswer:", "choices": {"label": ["A", "B"], "text": ["red", "blue"]}, "answerKey": 1, "symbol_counterfactual": {"prompt": "Q: color of the sky? A. blue B. red\nAnswer:", "choices": {"label": ["A", "B"], "text": ["blue", "red"]}, "answerKey": 0}}""";
        rows = await Import(_ws.Write("mcqa.jsonl", mcqa + "\n"));
        Assert.Equal(" B", rows[0]["correct"]!.GetValue<string>());
        Assert.Equal(" A", rows[0]["incorrect"]!.GetValue<string>());

        var arithmetic = """{"prompt": "12+7=", "label": 19, "operator": "+", "random_counterfactual": {"prompt": "31+5=", "label": 36}}""";
        rows = await Import(_ws.Write("add.jsonl", arithmetic + "\n"));
        Assert.Equal("31+5=", rows[0]["corrupted"]!.GetValue<string>());
        Assert.Equal(("19", "36"), (rows[0]["correct"]!.GetValue<string>(), rows[0]["incorrect"]!.GetValue<string>()));
        Assert.Null(rows[0]["label"]); // not the greater-than label
    }

    [Fact]
    public async Task MibRowWithoutACounterfactualNamesTheLine()
    {
        var path = _ws.Write("bad.jsonl", """{"prompt": "x", "label": 1}""" + "\n");
        var json = $$"""{ "name": "import", "steps": [ { "id": "import", "activity": "data.import-counterfactual", "inputs": { "path": "{{path}}" } } ] }""";
        var plan = _ws.Compiler.CompileText(json, "w.json", new Dictionary<string, string>(), new Pipelines.Engine.Validation.PathPolicy(_ws.Root, []));
        var run = await _ws.Runner.RunAsync(plan, new Pipelines.Engine.Running.RunOptions { WorkflowFile = "w.json", WorkflowText = json, BaseDirectory = _ws.Root });
        Assert.Equal(RunStatus.Failed, run.Status);
        Assert.Contains("bad.jsonl, line 1: no counterfactual column", run.Steps[0].Error);
    }

    public void Dispose() => _ws.Dispose();
}
