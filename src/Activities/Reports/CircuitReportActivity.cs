using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Reports;

/// <summary>
/// Draws a circuit as a layered graph (edge width ∝ |score|, blue positive, red negative), plots the faithfulness
/// curves, and writes an HTML report that embeds both with the inputs' digests as provenance. No run ids or times go
/// into the outputs, so the same inputs give the same bytes (and reproduce checks them).
/// </summary>
[Activity("report.circuit", Version = 2, Category = "Reports", Summary = "Circuit diagram (PNG, SVG), faithfulness curve (PNG) and an HTML report")]
[Output("report", ArtifactKinds.Report, Help = "Self-contained HTML report", MediaType = "text/html", FileName = "report.html")]
[Output("diagram", ArtifactKinds.Plot, Help = "The circuit as a layered graph (PNG)", MediaType = "image/png", FileName = "circuit.png")]
[Output("diagramSvg", ArtifactKinds.Plot, Help = "The same diagram as SVG", MediaType = "image/svg+xml", FileName = "circuit.svg")]
[Output("curve", ArtifactKinds.Plot, Help = "Faithfulness against the fraction of edges kept (PNG)", MediaType = "image/png", FileName = "faithfulness.png")]
public sealed class CircuitReportActivity : Activity<CircuitReportActivity.Input>
{
    public sealed record Input
    {
        [Input("The circuit (MIB JSON from circuits.prune)", Kind = ArtifactKinds.Circuit)]
        public required Artifact Circuit { get; init; }

        [Input("Faithfulness metrics from circuits.faithfulness", Kind = ArtifactKinds.Json)]
        public required Artifact Faithfulness { get; init; }

        [Input("Report title")]
        public string Title { get; init; } = "Circuit report";
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        JsonObject circuit, metrics;
        try
        {
            circuit = JsonNode.Parse(File.ReadAllText(input.Circuit.Path))!.AsObject();
            metrics = JsonNode.Parse(File.ReadAllText(input.Faithfulness.Path))!.AsObject();
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or NullReferenceException or InvalidOperationException)
        {
            throw new ActivityException($"report.circuit: unreadable input ({e.Message})", e);
        }
        var edges = circuit["edges"]?.AsObject().Where(e => e.Value?["in_graph"]?.GetValue<bool>() == true)
            .Select(e => (Name: e.Key, Score: e.Value!["score"]!.GetValue<double>())).OrderByDescending(e => Math.Abs(e.Score)).ToList()
            ?? throw new ActivityException("report.circuit: the circuit has no \"edges\" (expected MIB's JSON graph format)");
        var layers = circuit["cfg"]!["n_layers"]!.GetValue<int>();
        var heads = circuit["cfg"]!["n_heads"]!.GetValue<int>();

        var diagram = CircuitDiagram.Draw(edges, layers, heads, input.Title);
        diagram.SavePng(context.OutputFile("diagram"), 900, 160 + 110 * layers);
        var svgPath = context.OutputFile("diagramSvg");
        diagram.SaveSvg(svgPath, 900, 160 + 110 * layers);
        File.WriteAllText(svgPath, StableSvg(File.ReadAllText(svgPath)), new UTF8Encoding(false));
        var curve = CurvePlot(metrics);
        curve.SavePng(context.OutputFile("curve"), 700, 420);
        context.Report(0.7, "plots drawn");

        var html = Html(input, edges, metrics, File.ReadAllBytes(context.WrittenOutputs["diagram"]), File.ReadAllBytes(context.WrittenOutputs["curve"]));
        File.WriteAllText(context.OutputFile("report"), html, new UTF8Encoding(false));
        return Task.CompletedTask;
    }

    /// <summary>ScottPlot numbers clip paths with a process-wide counter; renumber them so equal plots give equal bytes.</summary>
    internal static string StableSvg(string svg)
    {
        var ids = new Dictionary<string, string>(StringComparer.Ordinal);
        return System.Text.RegularExpressions.Regex.Replace(svg, "cl_[0-9a-f]+\\b", m =>
        {
            if (!ids.TryGetValue(m.Value, out var id))
            {
                ids[m.Value] = id = $"cl_{ids.Count}";
            }
            return id;
        });
    }

    private static ScottPlot.Plot CurvePlot(JsonObject metrics)
    {
        var plot = new ScottPlot.Plot();
        if (Undefined(metrics) is { } reason)
        {
            // Never plot a curve that means nothing: say why instead.
            plot.Add.Annotation("Faithfulness is undefined on these pairs:\n" + Wrap(reason, 70));
            plot.Title($"Faithfulness undefined ({metrics["metric"]}, {metrics["pairs"]} pairs)");
            return plot;
        }
        foreach (var (name, color) in new[] { ("signed", ScottPlot.Colors.Blue), ("absolute", ScottPlot.Colors.OrangeRed) })
        {
            var points = metrics[name]?.AsArray();
            if (points is null)
            {
                continue;
            }
            var xs = points.Select(p => p!["fraction"]!.GetValue<double>() * 100).ToArray();
            var ys = points.Select(p => p!["faithfulness"]!.GetValue<double>()).ToArray();
            var scatter = plot.Add.Scatter(xs, ys, color);
            scatter.LegendText = name == "signed" ? $"signed ranking (CPR {metrics["cpr"]})" : $"|score| ranking (CMD {metrics["cmd"]})";
        }
        plot.Add.HorizontalLine(1, 1, ScottPlot.Colors.Gray);
        plot.Title($"Faithfulness ({metrics["metric"]}, {metrics["pairs"]} pairs)");
        plot.XLabel("edges kept (%)");
        plot.YLabel("faithfulness f(C)");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        return plot;
    }

    /// <summary>The reason faithfulness is undefined (circuits.faithfulness sets "defined": false), or null.</summary>
    private static string? Undefined(JsonObject metrics) =>
        metrics["defined"] is JsonValue d && d.TryGetValue<bool>(out var ok) && !ok
            ? metrics["undefinedReason"]?.GetValue<string>() ?? "m(N) and m(∅) do not differ"
            : null;

    private static string Wrap(string text, int width)
    {
        var lines = new List<string>();
        var line = "";
        foreach (var word in text.Split(' '))
        {
            if (line.Length + word.Length + 1 > width && line.Length > 0)
            {
                lines.Add(line);
                line = "";
            }
            line = line.Length == 0 ? word : line + " " + word;
        }
        lines.Add(line);
        return string.Join("\n", lines);
    }

    private static string Html(Input input, List<(string Name, double Score)> edges, JsonObject metrics, byte[] diagram, byte[] curve)
    {
        string E(string s) => WebUtility.HtmlEncode(s);
        string F(double d) => d.ToString("0.######", CultureInfo.InvariantCulture);
        var sb = new StringBuilder();
        sb.Append("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>").Append(E(input.Title)).Append("</title>");
        sb.Append("<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}img{max-width:100%}code{font-size:.9em}</style></head><body>");
        sb.Append("<h1>").Append(E(input.Title)).Append("</h1>");
        sb.Append("<h2>Faithfulness</h2>");
        if (Undefined(metrics) is { } reason)
        {
            sb.Append("<p class=\"warning\"><strong>Faithfulness is undefined:</strong> ").Append(E(reason))
              .Append(". CPR and CMD are not reported; check that the model has learned the task (its accuracy) and that the corrupted prompts change its answer.</p>");
        }
        sb.Append("<table>");
        foreach (var key in new[] { "metric", "ablation", "pairs", "edges", "mFull", "mEmpty", "cpr", "cmd", "selection" })
        {
            if (metrics[key] is { } v)
            {
                sb.Append("<tr><th>").Append(E(key)).Append("</th><td>").Append(E(v.ToString())).Append("</td></tr>");
            }
        }
        sb.Append("</table><p><img alt=\"faithfulness curve\" src=\"data:image/png;base64,").Append(Convert.ToBase64String(curve)).Append("\"></p>");
        sb.Append("<h2>Circuit (").Append(edges.Count).Append(" edges)</h2>");
        sb.Append("<p><img alt=\"circuit diagram\" src=\"data:image/png;base64,").Append(Convert.ToBase64String(diagram)).Append("\"></p>");
        sb.Append("<table><tr><th>edge</th><th>score</th></tr>");
        foreach (var (name, score) in edges)
        {
            sb.Append("<tr><td><code>").Append(E(name)).Append("</code></td><td>").Append(F(score)).Append("</td></tr>");
        }
        sb.Append("</table><h2>Provenance</h2><table>");
        sb.Append("<tr><th>circuit</th><td><code>sha256:").Append(input.Circuit.Digest).Append("</code></td></tr>");
        sb.Append("<tr><th>faithfulness</th><td><code>sha256:").Append(input.Faithfulness.Digest).Append("</code></td></tr>");
        sb.Append("</table><p>The run that made this report, its parameters and every upstream digest are in its <code>run.lock.json</code>.</p></body></html>\n");
        return sb.ToString();
    }
}

/// <summary>The layered circuit diagram.</summary>
public static class CircuitDiagram
{
    /// <summary>Input at the bottom, then per layer a row of heads and an MLP, logits at the top.</summary>
    public static (double X, double Y) Position(string node, int layers, int heads)
    {
        if (node == "input")
        {
            return (0, 0);
        }
        if (node == "logits")
        {
            return (0, 2 * layers + 1);
        }
        if (node.StartsWith('m'))
        {
            var l = int.Parse(node[1..], CultureInfo.InvariantCulture);
            return (0, 2 * l + 2);
        }
        var parts = node[1..].Split(".h");
        var layer = int.Parse(parts[0], CultureInfo.InvariantCulture);
        var head = int.Parse(parts[1], CultureInfo.InvariantCulture);
        return (head - (heads - 1) / 2.0, 2 * layer + 1);
    }

    public static ScottPlot.Plot Draw(IReadOnlyList<(string Name, double Score)> edges, int layers, int heads, string title)
    {
        var plot = new ScottPlot.Plot();
        var max = edges.Count == 0 ? 1 : edges.Max(e => Math.Abs(e.Score));
        var nodes = new SortedSet<string>(StringComparer.Ordinal) { "input", "logits" };
        foreach (var (name, score) in edges)
        {
            var arrow = name.IndexOf("->", StringComparison.Ordinal);
            var from = name[..arrow];
            var to = name[(arrow + 2)..];
            var qkv = to.IndexOf('<');
            if (qkv >= 0)
            {
                to = to[..qkv];
            }
            nodes.Add(from);
            nodes.Add(to);
            var (x1, y1) = Position(from, layers, heads);
            var (x2, y2) = Position(to, layers, heads);
            var line = plot.Add.Line(x1, y1, x2, y2);
            line.LineWidth = (float)(1 + 7 * Math.Abs(score) / max);
            line.LineColor = (score >= 0 ? ScottPlot.Colors.RoyalBlue : ScottPlot.Colors.Crimson).WithAlpha(0.75);
        }
        foreach (var node in nodes)
        {
            var (x, y) = Position(node, layers, heads);
            var marker = plot.Add.Marker(x, y);
            marker.Size = 14;
            marker.Color = node.StartsWith('a') ? ScottPlot.Colors.DarkOrange : node.StartsWith('m') ? ScottPlot.Colors.SeaGreen : ScottPlot.Colors.DimGray;
            var label = plot.Add.Text(node, x, y + 0.25);
            label.LabelFontSize = 12;
            label.LabelAlignment = ScottPlot.Alignment.LowerCenter;
        }
        plot.Title($"{title}: {edges.Count} edges (blue supports the answer, red opposes; width ∝ |score|)");
        plot.Axes.SetLimits(-(heads + 1) / 2.0, (heads + 1) / 2.0, -0.6, 2 * layers + 1.8);
        plot.HideGrid();
        plot.Axes.Frameless();
        return plot;
    }
}
