using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>How a Scores artifact was made: what its index.json's "info" records, typed.</summary>
/// <param name="Method">eap, eap-ig-inputs, eap-ig-activations, clean-corrupted or exact.</param>
/// <param name="Metric">logit difference or probability difference.</param>
/// <param name="Sign">What a positive score means.</param>
/// <param name="Positional">For PEAP scores: the mode (spans or positions) and the span titles.</param>
/// <param name="Raw">Every field as written (pairs, dropped counts, ablation, warning, ...).</param>
public sealed record ScoresInfo(string Method, string Metric, string Sign, PositionalInfo? Positional, JsonObject Raw)
{
    /// <summary>The part a circuit or graph file repeats so it says how its scores were made.</summary>
    public JsonObject Scoring() => new() { ["method"] = Method, ["metric"] = Metric, ["sign"] = Sign, ["ablation"] = Raw["ablation"]?.DeepClone() };
}

/// <summary>The span layout of position-aware (PEAP) scores.</summary>
public sealed record PositionalInfo(string Mode, IReadOnlyList<string> Spans);

/// <summary>A Scores artifact's index.json, typed: format, graph configuration, node order, edge count and info.</summary>
public sealed record ScoresIndex(string Format, JsonObject Cfg, int DModel, IReadOnlyList<string> Forward, IReadOnlyList<string> Backward, long Edges, ScoresInfo Info)
{
    public const string CurrentFormat = "pipelines-edge-scores/1";

    /// <summary>Reads and checks an index.json; a missing or mistyped field is an ActivityException naming it.</summary>
    public static ScoresIndex Read(string path)
    {
        JsonObject index;
        try
        {
            index = JsonNode.Parse(File.ReadAllText(path))?.AsObject() ?? throw new JsonException("empty");
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        {
            throw new ActivityException($"{Path.GetFileName(path)}: not a Scores index ({e.Message.Split(" LineNumber:")[0]})");
        }
        T Field<T>(JsonNode? node, string name)
        {
            try
            {
                return node is null ? throw new InvalidOperationException("missing") : node.GetValue<T>();
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                throw new ActivityException($"index.json: \"{name}\" is missing or not a {typeof(T).Name.ToLowerInvariant()}");
            }
        }
        var format = Field<string>(index["format"], "format");
        if (format != CurrentFormat)
        {
            throw new ActivityException($"index.json: format \"{format}\" is not one this version reads ({CurrentFormat})");
        }
        var cfg = index["cfg"] as JsonObject ?? throw new ActivityException("index.json: \"cfg\" is missing");
        var info = index["info"] as JsonObject ?? new JsonObject();
        PositionalInfo? positional = null;
        if (info["positional"] is JsonObject p)
        {
            positional = new PositionalInfo(Field<string>(p["mode"], "info.positional.mode"),
                (p["spans"] as JsonArray ?? throw new ActivityException("index.json: \"info.positional.spans\" is missing")).Select(x => Field<string>(x, "info.positional.spans[]")).ToList());
        }
        var scoresInfo = new ScoresInfo(
            info["method"]?.GetValue<string>() ?? "unknown",
            info["metric"]?.GetValue<string>() ?? "unknown",
            info["loss"]?.GetValue<string>() ?? "positive: corrupting the edge lowers the metric",
            positional, info);
        static List<string> Names(JsonNode? node) => (node as JsonArray)?.Select(x => x?.GetValue<string>() ?? "").ToList() ?? [];
        return new ScoresIndex(format, cfg, Field<int>(cfg["d_model"], "cfg.d_model"), Names(index["forward"]), Names(index["backward"]), Field<long>(index["edges"], "edges"), scoresInfo);
    }
}

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
            ["format"] = ScoresIndex.CurrentFormat,
            ["cfg"] = graph.ConfigJson(dModel),
            ["forward"] = new JsonArray(graph.Sources.Select(s => (JsonNode?)s.Name).ToArray()),
            ["backward"] = new JsonArray(graph.Destinations.Select(d => (JsonNode?)d.Name).ToArray()),
            ["edges"] = graph.EdgeCount,
            ["info"] = info,
        };
        File.WriteAllText(Path.Combine(directory, "index.json"), index.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }

    public static (ComputationGraph Graph, float[,] Scores, ScoresIndex Index) Read(string directory)
    {
        var indexPath = Path.Combine(directory, "index.json");
        if (!File.Exists(indexPath))
        {
            throw new ActivityException($"{directory}: not a Scores artifact (no index.json)");
        }
        var index = ScoresIndex.Read(indexPath);
        var cfg = index.Cfg;
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

    /// <summary>
    /// MIB's JSON graph format: cfg, nodes {name: {in_graph}}, edges {name: {score, in_graph}}, plus "scoring" (method,
    /// metric, sign, ablation) so the file says how its scores were made.
    /// </summary>
    public static JsonObject MibJson(ComputationGraph graph, float[,] scores, Circuit? circuit, int dModel, JsonObject? scoring = null)
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
        var json = new JsonObject { ["cfg"] = graph.ConfigJson(dModel), ["nodes"] = nodes, ["edges"] = edges };
        if (scoring is not null)
        {
            json["scoring"] = scoring;
        }
        return json;
    }
}
