namespace Pipelines.Tests.Workflow;

/// <summary>
/// Kinds of mistakes people make in workflow files. Each must be refused before anything runs, with the JSON path
/// and a message fragment saying what was expected. Shared by the compiler tests and the CLI exit-code tests.
/// </summary>
public static class MalformedCases
{
    /// <summary>A valid base to break: load → sample, with a seed parameter.</summary>
    public const string Base = """
        {
          "name": "base",
          "parameters": { "seed": { "type": "integer", "default": 0 }, "data": { "type": "path", "default": "data.jsonl" } },
          "steps": [
            { "id": "load", "activity": "data.load-jsonl", "inputs": { "path": { "param": "data" } } },
            { "id": "sample", "activity": "data.sample", "inputs": { "dataset": { "from": "load.dataset" }, "count": 5, "seed": { "param": "seed" } } }
          ]
        }
        """;

    /// <summary>(name, workflow text, --set overrides, expected JSON path, expected message fragment).</summary>
    public static readonly (string Name, string Json, string[] Set, string Path, string Message)[] All =
    [
        ("invalid JSON", "{ \"name\": \"x\", \"steps\": [", [], "$", "invalid JSON (line"),
        ("root is not an object", "[1, 2]", [], "$", "expected a JSON object"),
        ("missing name", Base.Replace("\"name\": \"base\",", ""), [], "$", "missing required property \"name\""),
        ("missing steps", "{ \"name\": \"x\" }", [], "$", "missing required property \"steps\""),
        ("empty steps", "{ \"name\": \"x\", \"steps\": [] }", [], "$.steps", "expected at least one step"),
        ("unknown top-level property", Base.Replace("\"name\": \"base\",", "\"name\": \"base\", \"stpes\": [],"), [], "$.stpes", "unknown property \"stpes\""),
        ("name of the wrong type", Base.Replace("\"name\": \"base\"", "\"name\": 42"), [], "$.name", "expected a string, got the number 42"),
        ("steps not an array", "{ \"name\": \"x\", \"steps\": { \"a\": 1 } }", [], "$.steps", "expected an array of steps"),
        ("unknown step property", Base.Replace("\"id\": \"load\",", "\"id\": \"load\", \"activty\": \"x\","), [], "$.steps[0].activty", "unknown property \"activty\""),
        ("unknown activity", Base.Replace("\"data.sample\"", "\"data.sampel\""), [], "$.steps[1].activity", "did you mean \"data.sample\""),
        ("unknown input", Base.Replace("\"count\": 5", "\"count\": 5, \"cuont\": 5"), [], "$.steps[1].inputs.cuont", "unknown input \"cuont\""),
        ("wrong literal type", Base.Replace("\"count\": 5", "\"count\": \"five\""), [], "$.steps[1].inputs.count", "expected an integer ≥ 1, got the string \"five\""),
        ("value below the minimum", Base.Replace("\"count\": 5", "\"count\": 0"), [], "$.steps[1].inputs.count", "expected an integer ≥ 1, got 0"),
        ("fraction where an integer belongs", Base.Replace("\"count\": 5", "\"count\": 2.5"), [], "$.steps[1].inputs.count", "expected an integer"),
        ("missing required input", Base.Replace("\"dataset\": { \"from\": \"load.dataset\" }, ", ""), [], "$.steps[1].inputs", "missing required input \"dataset\""),
        ("dangling step reference", Base.Replace("load.dataset", "lod.dataset"), [], "$.steps[1].inputs.dataset.from", "no step \"lod\""),
        ("dangling output reference", Base.Replace("load.dataset", "load.data"), [], "$.steps[1].inputs.dataset.from", "has no output \"data\""),
        ("malformed reference", Base.Replace("load.dataset", "load"), [], "$.steps[1].inputs.dataset.from", "of the form \"step.output\""),
        ("reference where a value belongs", Base.Replace("\"count\": 5", "\"count\": { \"from\": \"load.dataset\" }"), [], "$.steps[1].inputs.count", "not a reference"),
        ("literal where an artifact belongs", Base.Replace("{ \"from\": \"load.dataset\" }", "\"data.jsonl\""), [], "$.steps[1].inputs.dataset", "expected a reference to a Dataset output"),
        ("port kind mismatch", """
            { "name": "x", "steps": [
              { "id": "load", "activity": "data.load-jsonl", "inputs": { "path": "data.jsonl" } },
              { "id": "report", "activity": "report.json", "inputs": { "datasets": [ { "from": "load.dataset" } ] } },
              { "id": "sample", "activity": "data.sample", "inputs": { "dataset": { "from": "report.report" } } } ] }
            """, [], "$.steps[2].inputs.dataset.from", "report.report is a Report, but input \"dataset\" expects a Dataset"),
        ("cycle", """
            { "name": "x", "steps": [
              { "id": "a", "activity": "data.sample", "inputs": { "dataset": { "from": "b.dataset" } } },
              { "id": "b", "activity": "data.sample", "inputs": { "dataset": { "from": "a.dataset" } } } ] }
            """, [], "$.steps[0]", "cycle between steps: a -> b -> a"),
        ("self reference", Base.Replace("load.dataset", "sample.dataset"), [], "$.steps[1].inputs.dataset.from", "refers to its own output"),
        ("duplicate step id", Base.Replace("\"id\": \"sample\"", "\"id\": \"load\""), [], "$.steps[1].id", "duplicate step id \"load\""),
        ("invalid step id", Base.Replace("\"id\": \"sample\"", "\"id\": \"my step\""), [], "$.steps[1].id", "invalid step id"),
        ("duplicate property", Base.Replace("\"name\": \"base\",", "\"name\": \"base\", \"name\": \"again\","), [], "$.name", "duplicate property"),
        ("path traversal", Base.Replace("\"default\": \"data.jsonl\"", "\"default\": \"../../etc/passwd\""), [], "$.steps[0].inputs.path", "outside the allowed roots"),
        ("absolute path outside the roots", Base.Replace("\"default\": \"data.jsonl\"", "\"default\": \"/etc/passwd\""), [], "$.steps[0].inputs.path", "outside the allowed roots"),
        ("missing input file", Base.Replace("\"default\": \"data.jsonl\"", "\"default\": \"nothere.jsonl\""), [], "$.steps[0].inputs.path", "does not exist"),
        ("unknown parameter reference", Base.Replace("{ \"param\": \"seed\" }", "{ \"param\": \"sed\" }"), [], "$.steps[1].inputs.seed.param", "unknown parameter \"sed\""),
        ("parameter of the wrong type for the port", Base.Replace("\"count\": 5", "\"count\": { \"param\": \"data\" }"), [], "$.steps[1].inputs.count", "parameter \"data\" is of type path"),
        ("default of the wrong type", Base.Replace("\"default\": 0", "\"default\": \"zero\""), [], "$.parameters.seed.default", "expected an integer"),
        ("unknown parameter type", Base.Replace("\"type\": \"integer\"", "\"type\": \"int\""), [], "$.parameters.seed.type", "unknown parameter type \"int\""),
        ("bad --set value", Base, ["seed=abc"], "$.parameters.seed", "expected an integer, got \"abc\""),
        ("unknown --set parameter", Base, ["sede=1"], "$.parameters.sede", "unknown parameter \"sede\""),
        ("--set without a value", Base, ["seed"], "$.parameters", "expected name=value"),
        ("required parameter not set", Base.Replace("\"type\": \"integer\", \"default\": 0", "\"type\": \"integer\""), [], "$.parameters.seed", "set it with --set seed=VALUE"),
        ("activity validator rule", """
            { "name": "x", "steps": [
              { "id": "load", "activity": "data.load-jsonl", "inputs": { "path": "data.jsonl" } },
              { "id": "split", "activity": "data.split", "inputs": { "dataset": { "from": "load.dataset" }, "trainFraction": 1 } } ] }
            """, [], "$.steps[1].inputs.trainFraction", "strictly between 0 and 1"),
        ("list mixing references and values", """
            { "name": "x", "steps": [
              { "id": "load", "activity": "data.load-jsonl", "inputs": { "path": "data.jsonl" } },
              { "id": "report", "activity": "report.json", "inputs": { "datasets": [ { "from": "load.dataset" }, "x" ] } } ] }
            """, [], "$.steps[1].inputs.datasets", "not both"),
        ("enum-like value out of range (boolean expected)", Base.Replace("\"count\": 5", "\"count\": 5, \"replace\": \"yes\""), [], "$.steps[1].inputs.replace", "expected true or false"),
        ("duplicate property inside a step", Base.Replace("\"id\": \"load\",", "\"id\": \"load\", \"id\": \"other\","), [], "$.steps[0].id", "duplicate property"),
        ("duplicate property inside a parameter", Base.Replace("\"type\": \"integer\",", "\"type\": \"integer\", \"type\": \"string\","), [], "$.parameters.seed.type", "duplicate property"),
        ("step id with a trailing newline", Base.Replace("\"id\": \"sample\"", "\"id\": \"sample\\n\""), [], "$.steps[1].id", "invalid step id"),
        ("lone surrogate in a string", Base.Replace("\"name\": \"base\"", "\"name\": \"base\\ud800\""), [], "$.name", "unpaired surrogate"),
        ("integer written with a fraction part", Base.Replace("\"count\": 5", "\"count\": 4.0"), [], "$.steps[1].inputs.count", "without a fraction part"),
        ("integer parameter default written as 4.0", Base.Replace("\"default\": 0", "\"default\": 4.0"), [], "$.parameters.seed.default", "expected an integer"),
        ("invalid cron schedule", Base.Replace("\"steps\": [", "\"triggers\": [ { \"id\": \"t\", \"watch\": \".\", \"parameter\": \"data\", \"schedule\": \"99 * * * *\" } ], \"steps\": ["), [], "$.triggers[0].schedule", "invalid cron expression"),
        ("a directory where a file belongs", Base.Replace("\"default\": \"data.jsonl\"", "\"default\": \".\""), [], "$.steps[0].inputs.path", "expected a file, but \".\" is a directory"),
        ("a file where a checkpoint directory belongs", """
            { "name": "x", "steps": [ { "id": "load", "activity": "model.load", "inputs": { "path": "data.jsonl" } } ] }
            """, [], "$.steps[0].inputs.path", "expected a directory, but \"data.jsonl\" is a file"),
        ("faithfulness fraction outside (0, 1]", CircuitSteps("\"fractions\": [0, 0.5]"), [], "$.steps[3].inputs.fractions", "each in (0, 1]"),
        ("faithfulness statistic unknown", CircuitSteps("\"statistic\": \"median\""), [], "$.steps[3].inputs.statistic", "unknown statistic \"median\""),
        ("prune topK of zero", CircuitSteps("", "\"topK\": 0"), [], "$.steps[4].inputs.topK", "expected an integer ≥ 1"),
        ("prune statistic unknown", CircuitSteps("", "\"statistic\": \"mean\""), [], "$.steps[4].inputs.statistic", "unknown statistic \"mean\""),
    ];

    /// <summary>train → pairs → attribute → faithfulness → prune, with extra inputs for the last two.</summary>
    private static string CircuitSteps(string faithfulness, string prune = "") => $$"""
        { "name": "x", "steps": [
          { "id": "train", "activity": "model.train-toy", "inputs": { "steps": 1 } },
          { "id": "pairs", "activity": "data.toy-task", "inputs": { "count": 4 } },
          { "id": "attribute", "activity": "circuits.attribute", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "pairs.dataset" } } },
          { "id": "faithfulness", "activity": "circuits.faithfulness", "inputs": { "model": { "from": "train.model" }, "dataset": { "from": "pairs.dataset" }, "scores": { "from": "attribute.scores" }{{(faithfulness.Length > 0 ? ", " + faithfulness : "")}} } },
          { "id": "prune", "activity": "circuits.prune", "inputs": { "scores": { "from": "attribute.scores" }{{(prune.Length > 0 ? ", " + prune : "")}} } } ] }
        """;
}
