namespace Pipelines.IntegrationTests;

/// <summary>Workflows for the end-to-end tests.</summary>
public static class WorkflowFiles
{
    /// <summary>Four steps in a chain, each reading the whole dataset: slow enough to interrupt on a big file.</summary>
    public const string Chain = """
        {
          "$schema": "./workflow.schema.json",
          "name": "chain",
          "parameters": {
            "data": { "type": "path", "default": "data.jsonl" },
            "count": { "type": "integer", "default": 1000000 },
            "fraction": { "type": "number", "default": 0.8 }
          },
          "steps": [
            { "id": "load", "activity": "data.load-jsonl", "inputs": { "path": { "param": "data" } } },
            { "id": "sample", "activity": "data.sample", "inputs": { "dataset": { "from": "load.dataset" }, "count": { "param": "count" }, "seed": 1 } },
            { "id": "split", "activity": "data.split", "inputs": { "dataset": { "from": "sample.dataset" }, "trainFraction": { "param": "fraction" } } },
            { "id": "report", "activity": "report.json", "inputs": { "datasets": [ { "from": "split.train" }, { "from": "split.test" } ], "names": ["train", "test"] } }
          ]
        }
        """;
}
