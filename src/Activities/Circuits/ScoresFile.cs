using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>
/// The Scores artifact: a directory with <c>scores.safetensors</c> (tensor "scores", float32 [n_forward, n_backward],
/// zero off the real edges) and <c>index.json</c> (graph shape, method, node names in index order).
/// </summary>
public static class ScoresFile
{
    public static void Write(string directory, ComputationGraph graph, Tensor scores, JsonObject info, int dModel)
    {
        Directory.CreateDirectory(directory);
        SafetensorsFile.Write(Path.Combine(directory, "scores.safetensors"), [("scores", scores.to(ScalarType.Float32).cpu())]);
        var index = new JsonObject
        {
            ["format"] = "pipelines-edge-scores/1",
            ["cfg"] = graph.ConfigJson(dModel),
            ["forward"] = new JsonArray(graph.Sources.Select(s => (JsonNode?)s.Name).ToArray()),
            ["backward"] = new JsonArray(graph.Destinations.Select(d => (JsonNode?)d.Name).ToArray()),
            ["edges"] = graph.EdgeCount,
            ["info"] = info,
        };
        File.WriteAllText(Path.Combine(directory, "index.json"), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    public static (ComputationGraph Graph, float[,] Scores, JsonObject Index) Read(string directory)
    {
        var indexPath = Path.Combine(directory, "index.json");
        if (!File.Exists(indexPath))
        {
            throw new ActivityException($"{directory}: not a Scores artifact (no index.json)");
        }
        var index = JsonNode.Parse(File.ReadAllText(indexPath))!.AsObject();
        var cfg = index["cfg"]!;
        var graph = new ComputationGraph(cfg["n_layers"]!.GetValue<int>(), cfg["n_heads"]!.GetValue<int>(), cfg["parallel_attn_mlp"]!.GetValue<bool>());
        using var file = SafetensorsFile.Open(Path.Combine(directory, "scores.safetensors"));
        using var t = file.Read("scores");
        return (graph, ToGrid(t, graph), index);
    }

    /// <summary>A [n_forward, n_backward] score tensor as a float grid.</summary>
    public static float[,] ToGrid(Tensor scores, ComputationGraph graph)
    {
        var flat = scores.to(ScalarType.Float32).cpu().data<float>().ToArray();
        var grid = new float[graph.NForward, graph.NBackward];
        Buffer.BlockCopy(flat, 0, grid, 0, flat.Length * sizeof(float));
        return grid;
    }

    /// <summary>MIB's JSON graph format: cfg, nodes {name: {in_graph}}, edges {name: {score, in_graph}}.</summary>
    public static JsonObject MibJson(ComputationGraph graph, float[,] scores, Circuit? circuit, int dModel)
    {
        var alive = circuit?.AliveSources();
        var nodes = new JsonObject();
        foreach (var s in graph.Sources)
        {
            nodes[s.Name] = new JsonObject { ["in_graph"] = alive is null || alive[s.Index] };
        }
        nodes["logits"] = new JsonObject { ["in_graph"] = true };
        var edges = new JsonObject();
        foreach (var (f, b) in graph.Edges())
        {
            edges[graph.EdgeName(f, b)] = new JsonObject { ["score"] = double.IsFinite(scores[f, b]) ? (JsonNode?)scores[f, b] : null, ["in_graph"] = circuit is null || circuit.Edges[f, b] };
        }
        return new JsonObject { ["cfg"] = graph.ConfigJson(dModel), ["nodes"] = nodes, ["edges"] = edges };
    }
}
