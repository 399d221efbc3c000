using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Activities.Schemas;
using Pipelines.Engine.Ledger;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Tests.Schemas;

public sealed class SchemaTests : IDisposable
{
    private readonly Workspace _ws = new();

    private static string SharedData(string file) =>
        Path.GetFullPath(Path.Combine(Pipelines.Tests.Workflow.SchemaTests.RepoRoot(), "datasets", file));

    private static readonly DatasetSchema GreaterThan = new(
        new[] { "Subject", "Duration Verb", "Time Preposition", "Start Year Marker", "Start Year", "Time Connector", "End Year Marker", "End Year" }
            .Select(t => new SchemaSpan(t, "")).ToList());

    private const string GreaterThanPattern =
        @"(?<Subject>The \w+) (?<Duration_Verb>\w+) (?<Time_Preposition>from) (?<Start_Year_Marker>the year) (?<Start_Year>\d+) (?<Time_Connector>to) (?<End_Year_Marker>the year) (?<End_Year>\d+)";

    [Fact]
    public void RuleBasedSpansOnGpt2TokensEqualPeapsPublishedApplication()
    {
        // PEAP's own greater-than data, with its schema applied for GPT-2 (BOS at 0): our regex generator, on the
        // real GPT-2 tokenizer, must put every span boundary where PEAP's CSV does, on all 500 rows.
        var tokenizer = TokenizerLoader.Gpt2Reference();
        var applier = new RegexSchemaApplier(GreaterThan, GreaterThanPattern, tokenizer, prependBos: true);
        var (header, rows) = Csv.Read(SharedData("peap-gpt2/greater_than-greater_than_data_clean.csv"), "gt.csv");
        var spanColumns = GreaterThan.Spans.Select(s => Array.IndexOf(header, s.Column)).ToArray();
        Assert.DoesNotContain(-1, spanColumns);
        Assert.Equal(500, rows.Count);
        foreach (var row in rows)
        {
            var (app, errors) = applier.Apply(row[0], allowEmpty: false);
            Assert.True(errors.Count == 0, row[0] + ": " + string.Join("; ", errors));
            Assert.Equal(int.Parse(row[1]), app!.Length);
            Assert.Equal(spanColumns.Select(c => int.Parse(row[c])).ToArray(), app.Starts);
        }
    }

    [Theory]
    [InlineData("peap-gpt2/ioi_ABBA-IOI_data_clean.csv")]
    [InlineData("peap-gpt2/greater_than-greater_than_data_counter_vanila.csv")]
    public void PeapsPublishedApplicationsPassOurValidatorAndLengthsMatchGpt2(string file)
    {
        var tokenizer = TokenizerLoader.Gpt2Reference();
        var (header, rows) = Csv.Read(SharedData(file), file);
        var first = Array.IndexOf(header, "split") + 1 + (header.Contains("wrong_prob") ? 4 : 0);
        var schema = new DatasetSchema(header[first..].Select(t => new SchemaSpan(t, "")).ToList());
        foreach (var row in rows)
        {
            var length = int.Parse(row[Array.IndexOf(header, "length")]);
            Assert.Equal(1 + tokenizer.Encode(row[0]).Count, length);
            var app = new SpanApplication(row[first..].Select(int.Parse).ToArray(), length);
            Assert.Empty(SpanValidator.Check(schema, app, first: 1, allowEmpty: true));
        }
    }

    [Fact]
    public void ValidatorNamesEachBrokenRule()
    {
        var schema = new DatasetSchema([new("A", ""), new("B", ""), new("C", "")]);
        Assert.Empty(SpanValidator.Check(schema, new SpanApplication([1, 3, 5], 6), 1, false));
        Assert.Contains(SpanValidator.Check(schema, new SpanApplication([1, 3], 6), 1, false), e => e.Contains("expected 3 spans, got 2"));
        Assert.Contains(SpanValidator.Check(schema, new SpanApplication([2, 3, 5], 6), 1, false), e => e.Contains("must start at the first token"));
        Assert.Contains(SpanValidator.Check(schema, new SpanApplication([1, 4, 3], 6), 1, false), e => e.Contains("schema order"));
        Assert.Contains(SpanValidator.Check(schema, new SpanApplication([1, 3, 4], 6), 1, false), e => e.Contains("exactly the last token; it holds 2"));
        Assert.Equal(["empty spans: A"], SpanValidator.Check(schema, new SpanApplication([1, 1, 5], 6), 1, false));
        Assert.Empty(SpanValidator.Check(schema, new SpanApplication([1, 1, 5], 6), 1, true));

        string[] tokens = ["The", " war", " lasted", " to"];
        var (ok, none) = SpanValidator.FromTokenLists(schema, """Sure: {"A": ["The", " war"], "B": ["lasted"], "C": [" to"]}""", tokens, 1, false);
        Assert.Empty(none);
        Assert.Equal([1, 3, 4], ok!.Starts);
        Assert.Contains(SpanValidator.FromTokenLists(schema, "no json here", tokens, 1, false).Errors, e => e.Contains("not a JSON object"));
        Assert.Contains(SpanValidator.FromTokenLists(schema, """{"A": ["The"], "C": [" to"], "B": []}""", tokens, 1, false).Errors, e => e.Contains("schema's order"));
        Assert.Contains(SpanValidator.FromTokenLists(schema, """{"A": ["The"], "B": [" war"], "D": [" to"]}""", tokens, 1, false).Errors, e => e.Contains("missing spans: C"));
        Assert.Contains(SpanValidator.FromTokenLists(schema, """{"A": ["The", " lasted"], "B": [" war"], "C": [" to"]}""", tokens, 1, false).Errors, e => e.Contains("not the example's next token"));
        Assert.Contains(SpanValidator.FromTokenLists(schema, """{"A": ["The"], "B": [" war"], "C": [" lasted"]}""", tokens, 1, false).Errors, e => e.Contains("cover 3 of the example's 4 tokens"));
        Assert.Contains(SpanValidator.FromTokenLists(schema, """{"A": ["The"], "B": [" war"], "C": [" lasted", " to", " to"]}""", tokens, 1, false).Errors, e => e.Contains("beyond"));

        var dup = DatasetSchema.Parse("""{"Name": "first", "Verb": "v", "Name": "second"}""")!;
        Assert.Equal(["Name 1", "Verb", "Name 2"], dup.Spans.Select(s => s.Title));
    }

    private const string IoiSchema = """{ "Intro": "opening words", "Names": "the two names", "Event": "what they did", "Subject": "the repeated name", "Action": "the giving", "Final": "the last token" }""";
    private const string IoiPattern = @"(?<Intro>When|Then ,|After) (?<Names>\w+ and \w+) (?<Event>.+?) (?<Subject>\w+) (?<Action>(gave|handed) (a|the) \w+) (?<Final>to)";

    private string ToyModel()
    {
        var dir = Path.Combine(_ws.Root, "toy-model");
        if (!Directory.Exists(dir))
        {
            Pipelines.Models.Training.ToyTrainer.Train(new() { Task = "ioi", Steps = 1, DModel = 16, DMlp = 32, NLayers = 1, NHeads = 2, EvalExamples = 4 }, dir);
        }
        return dir;
    }

    /// <summary>A workflow around one schema step: <c>"generator": "rules"</c> picks schema.apply, "llm" schema.generate.</summary>
    private string Workflow(string generatorInputs)
    {
        var activity = generatorInputs.Contains("\"generator\": \"rules\"", StringComparison.Ordinal) ? "schema.apply" : "schema.generate";
        generatorInputs = System.Text.RegularExpressions.Regex.Replace(generatorInputs, @"""generator"": ""(rules|llm)"",?\s*", "");
        return WorkflowFor(activity, generatorInputs.Trim().Length == 0 ? "\"field\": \"clean\"" : generatorInputs);
    }

    private string WorkflowFor(string activity, string inputs) => $$"""
        {
          "name": "schema",
          "steps": [
            { "id": "pairs", "activity": "data.toy-task", "inputs": { "task": "ioi", "count": 20, "seed": 3 } },
            { "id": "model", "activity": "model.load", "inputs": { "path": "{{ToyModel()}}" } },
            { "id": "schema", "activity": "{{activity}}", "inputs": { "dataset": { "from": "pairs.dataset" }, "model": { "from": "model.model" }, {{inputs}} } }
          ]
        }
        """;

    private async Task<(List<JsonObject> Rows, JsonObject Report, JsonObject Schema)> RunSchema(string generatorInputs)
    {
        var run = await _ws.RunAsync(Workflow(generatorInputs));
        Assert.True(run.Status == RunStatus.Succeeded, string.Join("; ", run.Steps.Select(s => s.Error)));
        var outputs = run.Steps.Single(s => s.StepId == "schema").Outputs;
        return (Jsonl.Read(_ws.Store.ObjectPath(outputs["dataset"].Digest), "d"),
            JsonNode.Parse(File.ReadAllText(_ws.Store.ObjectPath(outputs["report"].Digest)))!.AsObject(),
            JsonNode.Parse(File.ReadAllText(_ws.Store.ObjectPath(outputs["schema"].Digest)))!.AsObject());
    }

    [Fact]
    public async Task RulesGeneratorAppliesTheSchemaToToyIoiThroughTheEngine()
    {
        var (rows, report, schema) = await RunSchema($$"""
            "generator": "rules", "schema": {{IoiSchema}}, "pattern": {{System.Text.Json.JsonSerializer.Serialize(IoiPattern)}}
            """);
        Assert.Equal(20, rows.Count);
        Assert.Equal(20, report["valid"]!.GetValue<int>());
        Assert.True(report["accepted"]!.GetValue<bool>());
        Assert.Equal(["Intro", "Names", "Event", "Subject", "Action", "Final"], schema.Select(p => p.Key));
        foreach (var row in rows)
        {
            var words = row["clean"]!.GetValue<string>().Split(' ');
            var spans = row["spans"]!.AsObject();
            Assert.Equal(words.Length + 1, row["length"]!.GetValue<int>()); // BOS + one token per word
            Assert.Equal(1, spans["Intro"]!.GetValue<int>());
            Assert.Equal(words.Length - 5 + 1, spans["Subject"]!.GetValue<int>()); // "S2 gave a drink to"
            Assert.Equal(words.Length, spans["Final"]!.GetValue<int>());
            Assert.Equal("and", words[spans["Names"]!.GetValue<int>()]); // position p is word p − 1; the second word of Names
        }
    }

    [Fact]
    public async Task RulesGeneratorFailsBelowTheValidityThresholdAndNamesTheFirstError()
    {
        var run = await _ws.RunAsync(Workflow($$"""
            "generator": "rules", "schema": {{IoiSchema}}, "pattern": {{System.Text.Json.JsonSerializer.Serialize(IoiPattern.Replace("When|", ""))}}
            """));
        Assert.Equal(RunStatus.Failed, run.Status);
        var error = run.Steps.Single(s => s.StepId == "schema").Error!;
        Assert.Contains("fit the schema; the threshold is 90", error);
        Assert.Contains("does not match the whole prompt", error);
    }

    /// <summary>
    /// An OpenAI-compatible chat endpoint on loopback that plays the LLM: it drafts the toy-IOI schema, and applies it
    /// by reading the token list out of the prompt; its very first application is wrong on purpose (the final span
    /// holds two tokens), so the validator's message must come back to it in the retry.
    /// </summary>
    private sealed class ScriptedLlm : IDisposable
    {
        private readonly HttpListener _listener = new();
        private readonly Task _loop;
        private int _applications;

        private readonly bool _alwaysWrong;

        public ScriptedLlm(bool alwaysWrong = false)
        {
            _alwaysWrong = alwaysWrong;
            var port = FreePort();
            Url = $"http://127.0.0.1:{port}/v1";
            _listener.Prefixes.Add($"http://127.0.0.1:{port}/");
            _listener.Start();
            _loop = Task.Run(Serve);
        }

        public string Url { get; }
        public List<string> Requests { get; } = [];
        public List<string?> Authorizations { get; } = [];

        private static int FreePort()
        {
            var l = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
            l.Start();
            var port = ((IPEndPoint)l.LocalEndpoint).Port;
            l.Stop();
            return port;
        }

        private async Task Serve()
        {
            while (_listener.IsListening)
            {
                HttpListenerContext ctx;
                try
                {
                    ctx = await _listener.GetContextAsync();
                }
                catch (Exception) when (!_listener.IsListening)
                {
                    return;
                }
                var body = await new StreamReader(ctx.Request.InputStream).ReadToEndAsync();
                string answer;
                lock (Requests)
                {
                    Requests.Add(body);
                    Authorizations.Add(ctx.Request.Headers["Authorization"]);
                    answer = Answer(JsonNode.Parse(body)!["messages"]!.AsArray());
                }
                var reply = new JsonObject { ["choices"] = new JsonArray(new JsonObject { ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = answer } }) };
                var bytes = Encoding.UTF8.GetBytes(reply.ToJsonString());
                ctx.Response.ContentType = "application/json";
                await ctx.Response.OutputStream.WriteAsync(bytes);
                ctx.Response.Close();
            }
        }

        private string Answer(JsonArray messages)
        {
            var first = messages[1]!["content"]!.GetValue<string>();
            if (first.Contains("Write a schema"))
            {
                return IoiSchema;
            }
            if (first.Contains("create one new schema"))
            {
                return "Here is the unified schema:\n```json\n" + IoiSchema + "\n```";
            }
            var line = first.Split('\n').Single(l => l.StartsWith("Example tokens: ", StringComparison.Ordinal));
            var t = JsonNode.Parse(line["Example tokens: ".Length..])!.AsArray().Select(x => x!.GetValue<string>()).ToList();
            var intro = t[0] == "Then" ? 2 : 1;
            var n = t.Count;
            var spans = new JsonObject
            {
                ["Intro"] = Slice(t, 0, intro), ["Names"] = Slice(t, intro, intro + 3), ["Event"] = Slice(t, intro + 3, n - 5),
                ["Subject"] = Slice(t, n - 5, n - 4), ["Action"] = Slice(t, n - 4, n - 1), ["Final"] = Slice(t, n - 1, n),
            };
            if (_applications++ == 0 || _alwaysWrong)
            {
                spans["Action"] = Slice(t, n - 4, n - 2);
                spans["Final"] = Slice(t, n - 2, n);
            }
            return spans.ToJsonString();
        }

        private static JsonArray Slice(List<string> t, int from, int to) => new(t[from..to].Select(x => (JsonNode)x).ToArray());

        public void Dispose()
        {
            _listener.Stop();
            _listener.Close();
            try
            {
                _loop.Wait(TimeSpan.FromSeconds(5));
            }
            catch (AggregateException)
            {
            }
        }
    }

    [Fact]
    public async Task LlmGeneratorDraftsUnifiesAndAppliesWithTheValidatorInTheLoop()
    {
        using var llm = new ScriptedLlm();
        var keyVariable = "PIPELINES_TEST_LLM_KEY_" + Guid.NewGuid().ToString("N")[..8];
        Environment.SetEnvironmentVariable(keyVariable, "sk-test");
        Environment.SetEnvironmentVariable("PIPELINES_SECRET_VARIABLES", keyVariable); // an administrator's allow-list
        var (rows, report, schema) = await RunSchema($$"""
            "generator": "llm", "endpoint": "{{llm.Url}}", "llmModel": "scripted", "apiKeyVariable": "{{keyVariable}}"
            """);
        Assert.Equal(["Intro", "Names", "Event", "Subject", "Action", "Final"], schema.Select(p => p.Key));
        Assert.Equal(20, report["valid"]!.GetValue<int>());
        // 3 drafts (15 examples in batches of 5) + 1 unification + 15 drafting applications + 1 retry + 20 dataset applications.
        Assert.Equal(40, report["calls"]!.GetValue<int>());
        Assert.Equal(40, llm.Requests.Count);
        Assert.All(llm.Authorizations, a => Assert.Equal("Bearer sk-test", a));
        Assert.Contains(llm.Requests, r => r.Contains("That application is invalid") && r.Contains("must hold exactly the last token"));
        Assert.Equal("scripted at " + llm.Url, report["llm"]!.GetValue<string>());
        Assert.Equal(15, report["rounds"]![0]!["valid"]!.GetValue<int>());

        // The LLM's application and the rule-based one agree on every row.
        var (ruled, _, _) = await RunSchema($$"""
            "generator": "rules", "schema": {{IoiSchema}}, "pattern": {{System.Text.Json.JsonSerializer.Serialize(IoiPattern)}}
            """);
        Assert.Equal(ruled.Select(r => r["spans"]!.ToJsonString()), rows.Select(r => r["spans"]!.ToJsonString()));
    }

    [Fact]
    public async Task SettingsReadFromTheEnvironmentArePartOfTheCacheKey()
    {
        // schema.generate falls back to PIPELINES_LLM_ENDPOINT and PIPELINES_LLM_MODEL: changing them must recompute.
        using var llm = new ScriptedLlm();
        var before = (Environment.GetEnvironmentVariable("PIPELINES_LLM_MODEL"), Environment.GetEnvironmentVariable("PIPELINES_LLM_ENDPOINT"));
        var fromEnvironment = $$"""
            "generator": "llm", "schema": {{IoiSchema}}
            """;
        try
        {
            Environment.SetEnvironmentVariable("PIPELINES_LLM_ENDPOINT", llm.Url);
            Environment.SetEnvironmentVariable("PIPELINES_LLM_MODEL", "model-a");
            var first = await _ws.RunAsync(Workflow(fromEnvironment));
            Assert.True(first.Status == RunStatus.Succeeded, string.Join("; ", first.Steps.Select(s => s.Error)));
            Assert.Equal(0, (await _ws.RunAsync(Workflow(fromEnvironment))).Computed);
            Environment.SetEnvironmentVariable("PIPELINES_LLM_MODEL", "model-b");
            var changed = await _ws.RunAsync(Workflow(fromEnvironment));
            Assert.Contains(changed.Steps, s => s.Status == Pipelines.Engine.Ledger.StepStatus.Computed && s.Activity == "schema.generate");
        }
        finally
        {
            Environment.SetEnvironmentVariable("PIPELINES_LLM_MODEL", before.Item1);
            Environment.SetEnvironmentVariable("PIPELINES_LLM_ENDPOINT", before.Item2);
        }
    }

    [Fact]
    public void AKeyVariableOffTheAllowListIsRefusedBeforeAnythingIsSent()
    {
        using var llm = new ScriptedLlm();
        Environment.SetEnvironmentVariable("PIPELINES_TEST_SECRET", "do-not-send");
        var e = Assert.Throws<Pipelines.Engine.Definitions.WorkflowInvalidException>(() => _ws.Compile(Workflow($$"""
            "generator": "llm", "endpoint": "{{llm.Url}}", "apiKeyVariable": "PIPELINES_TEST_SECRET"
            """)));
        var d = Assert.Single(e.Diagnostics);
        Assert.EndsWith(".inputs.apiKeyVariable", d.JsonPath);
        Assert.Contains("not on the allow-list", d.Message);
        Assert.DoesNotContain("do-not-send", d.Message);
        Assert.Empty(llm.Requests);
        var database = Assert.Throws<Pipelines.Engine.Definitions.WorkflowInvalidException>(() => _ws.Compile(Workflow($$"""
            "generator": "llm", "endpoint": "{{llm.Url}}", "apiKeyVariable": "PIPELINES_DATABASE"
            """)));
        Assert.Contains("not on the allow-list", Assert.Single(database.Diagnostics).Message);
    }

    [Fact]
    public void EndpointsCanBeRestrictedAndCarryNoCredentials()
    {
        Assert.Null(Pipelines.Activities.RemoteEndpoints.CheckEndpoint("http://127.0.0.1:8000/v1"));
        Assert.Contains("without credentials", Pipelines.Activities.RemoteEndpoints.CheckEndpoint("http://user:pw@127.0.0.1:8000/v1"));
        Assert.Contains("not an http(s) URL", Pipelines.Activities.RemoteEndpoints.CheckEndpoint("file:///etc/passwd"));
        var before = Environment.GetEnvironmentVariable("PIPELINES_LLM_ENDPOINTS");
        try
        {
            Environment.SetEnvironmentVariable("PIPELINES_LLM_ENDPOINTS", "http://127.0.0.1:8000/");
            Assert.Null(Pipelines.Activities.RemoteEndpoints.CheckEndpoint("http://127.0.0.1:8000/v1"));
            Assert.Contains("not one this installation allows", Pipelines.Activities.RemoteEndpoints.CheckEndpoint("https://evil.example/v1"));
        }
        finally
        {
            Environment.SetEnvironmentVariable("PIPELINES_LLM_ENDPOINTS", before);
        }
    }

    [Fact]
    public async Task LlmGeneratorRejectsSchemasItCannotApplyAndStopsAfterItsRounds()
    {
        using var llm = new ScriptedLlm(alwaysWrong: true);
        var run = await _ws.RunAsync(Workflow($$"""
            "generator": "llm", "endpoint": "{{llm.Url}}", "rounds": 2, "examples": 5, "attempts": 2
            """));
        Assert.Equal(RunStatus.Failed, run.Status);
        Assert.Contains("no schema met the threshold (at most 20% of 5 drafting examples invalid) in 4 rounds", run.Steps.Single(s => s.StepId == "schema").Error);
        // Per round: 1 draft + 1 unification + 2 examples × 2 attempts, aborted once 2 of 5 failed (> 20%).
        Assert.Equal(4 * (1 + 1 + 2 * 2), llm.Requests.Count);
        Assert.Contains(llm.Requests, r => r.Contains("The previous schema failed on these examples"));
    }

    [Fact]
    public async Task LlmGeneratorWithoutAnEndpointSaysHowToConfigureOne()
    {
        Environment.SetEnvironmentVariable("PIPELINES_LLM_ENDPOINT", null);
        var run = await _ws.RunAsync(Workflow("\"generator\": \"llm\""));
        Assert.Equal(RunStatus.Failed, run.Status);
        Assert.Contains("needs an endpoint (inputs.endpoint or $PIPELINES_LLM_ENDPOINT", run.Steps.Single(s => s.StepId == "schema").Error);
    }

    [Fact]
    public async Task LlmGeneratorOnALocalModelRefusesAPromptBeyondItsContext()
    {
        // Our own runtime as the chat model: prompts go through its chat template and generator.
        var json = Workflow("\"generator\": \"llm\", \"assistant\": { \"from\": \"model.model\" }, \"maxTokens\": 6, \"rounds\": 1, \"examples\": 2, \"attempts\": 1");
        var run = await _ws.RunAsync(json);
        Assert.Equal(RunStatus.Failed, run.Status);
        var error = run.Steps.Single(s => s.StepId == "schema").Error!;
        // The toy model's learned positions stop at 32: the generator refuses a prompt beyond them, with the numbers.
        Assert.Matches(@"local assistant \w+: the prompt has \d+ tokens and up to 6 more are asked for, beyond the model's context of \d+ positions", error);
    }

    public void Dispose() => _ws.Dispose();
}
