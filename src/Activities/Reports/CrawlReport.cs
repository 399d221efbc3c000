using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Activities.Crawl;

namespace Pipelines.Activities.Reports;

/// <summary>The pieces of report.crawl: the discovery graph (SVG), the budget curves (ScottPlot) and the HTML.</summary>
public static class CrawlReport
{
    private static string E(string? s) => WebUtility.HtmlEncode(s ?? "");

    private static string F(double v) => v.ToString("0.###", CultureInfo.InvariantCulture);

    /// <summary>
    /// Parent → child over the heads: x is the topic id (discovery order), y the depth in the seed tree; refused heads
    /// red, others grey; edges from the seed whose prompt revealed the topic.
    /// </summary>
    public static string DiscoveryGraph(List<Topic> topics, int width = 960)
    {
        var byId = topics.ToDictionary(t => t.Id);
        var heads = topics.Where(t => t.IsHead).ToList();
        var depth = new Dictionary<int, int>();
        int Depth(Topic t)
        {
            if (depth.TryGetValue(t.Id, out var d))
            {
                return d;
            }
            depth[t.Id] = 0;
            return depth[t.Id] = t.ParentId >= 0 && byId.TryGetValue(t.ParentId, out var p) ? Depth(p) + 1 : 0;
        }
        var maxDepth = heads.Count == 0 ? 0 : heads.Max(Depth);
        var maxId = Math.Max(1, topics.Count == 0 ? 1 : topics.Max(t => t.Id));
        var height = 60 + 70 * (maxDepth + 1);
        double X(Topic t) => 30 + (width - 60) * (double)t.Id / maxId;
        double Y(Topic t) => 40 + 70 * Depth(t);
        var svg = new StringBuilder($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"10\">");
        svg.Append($"<text x=\"30\" y=\"16\" font-size=\"12\">x: topic id (0–{maxId}); y: depth in the seed tree; red: refused heads</text>");
        foreach (var t in heads.Where(t => t.ParentId >= 0 && byId.ContainsKey(t.ParentId)))
        {
            var p = byId[t.ParentId];
            svg.Append($"<line x1=\"{F(X(p))}\" y1=\"{F(Y(p))}\" x2=\"{F(X(t))}\" y2=\"{F(Y(t))}\" stroke=\"{(t.IsRefused == true ? "#e07070" : "#cccccc")}\" stroke-width=\"1\"/>");
        }
        foreach (var t in heads)
        {
            var refused = t.IsRefused == true;
            svg.Append($"<circle cx=\"{F(X(t))}\" cy=\"{F(Y(t))}\" r=\"{(refused ? 4 : 2.5)}\" fill=\"{(refused ? "#c0392b" : "#999999")}\"><title>#{t.Id} {E(t.Text)} (refusal {F(t.RefusalRate ?? 0)})</title></circle>");
            if (refused)
            {
                svg.Append($"<text x=\"{F(X(t) + 5)}\" y=\"{F(Y(t) - 5)}\" fill=\"#7b241c\">{E(t.Normalized)}</text>");
            }
        }
        return svg.Append("</svg>").ToString();
    }

    /// <summary>Recall against a budget (topic ids or prompts), one line per evaluated crawl.</summary>
    public static ScottPlot.Plot Curves(IReadOnlyList<(string Name, JsonObject Evaluation)> evaluations, string key, string xLabel)
    {
        var plot = new ScottPlot.Plot();
        var colors = new[] { ScottPlot.Colors.Crimson, ScottPlot.Colors.SteelBlue, ScottPlot.Colors.SeaGreen };
        for (var i = 0; i < evaluations.Count; i++)
        {
            var points = evaluations[i].Evaluation[key]!.AsArray();
            var xs = points.Select(p => p!["at"]!.GetValue<double>()).ToArray();
            var ys = points.Select(p => p!["recall"]!.GetValue<double>()).ToArray();
            var line = plot.Add.Scatter(xs, ys, colors[i % colors.Length]);
            line.ConnectStyle = ScottPlot.ConnectStyle.StepHorizontal;
            line.LegendText = $"{evaluations[i].Name} (recall {evaluations[i].Evaluation["found"]}/{evaluations[i].Evaluation["groundTruth"]})";
        }
        plot.Axes.SetLimitsY(0, 1.05);
        plot.XLabel(xLabel);
        plot.YLabel("recall of the ground truth");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        return plot;
    }

    /// <summary>Precision over the refused heads in discovery order.</summary>
    public static ScottPlot.Plot Precision(IReadOnlyList<(string Name, JsonObject Evaluation)> evaluations)
    {
        var plot = new ScottPlot.Plot();
        var colors = new[] { ScottPlot.Colors.Crimson, ScottPlot.Colors.SteelBlue };
        for (var i = 0; i < evaluations.Count; i++)
        {
            var points = evaluations[i].Evaluation["precisionCurve"]!.AsArray();
            if (points.Count == 0)
            {
                continue;
            }
            var line = plot.Add.Scatter(points.Select(p => p!["k"]!.GetValue<double>()).ToArray(), points.Select(p => p!["precision"]!.GetValue<double>()).ToArray(), colors[i % colors.Length]);
            line.LegendText = evaluations[i].Name;
        }
        plot.Axes.SetLimitsY(0, 1.05);
        plot.XLabel("refused heads, in discovery order (k)");
        plot.YLabel("precision (matched / k)");
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        return plot;
    }

    public static string Html(string title, List<Topic> topics, JsonObject? stats, IReadOnlyList<(string Name, JsonObject Evaluation)> evaluations,
        string graphSvg, byte[]? recallPng, byte[]? promptsPng, byte[]? precisionPng)
    {
        var html = new StringBuilder();
        html.Append($"<!doctype html><html><head><meta charset=\"utf-8\"><title>{E(title)}</title><style>body{{font-family:sans-serif;margin:24px;max-width:1100px}}" +
            "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}" +
            ".r{color:#c0392b;font-weight:bold}img{max-width:100%}</style></head><body>");
        html.Append($"<h1>{E(title)}</h1>");
        var refused = topics.Where(t => t.IsHead && t.IsRefused == true).OrderBy(t => t.Id).ToList();
        html.Append($"<p>{topics.Count} topics, {topics.Count(t => t.IsHead)} distinct (heads), <span class=\"r\">{refused.Count} refused</span>");
        if (stats is not null)
        {
            html.Append($"; {stats["prompts"]} prompts to {E(stats["target"]?.ToString())}, mode {E(stats["mode"]?.ToString())}; {E(stats["finished"]?.ToString())}");
        }
        html.Append(".</p>");
        if (evaluations.Count > 0)
        {
            html.Append("<h2>Recall</h2><table><tr><th>crawl</th><th>match</th><th>recall</th><th>precision</th><th>refused heads</th></tr>");
            foreach (var (name, ev) in evaluations)
            {
                html.Append($"<tr><td>{E(name)}</td><td>{E(ev["match"]?.ToString())}</td><td>{ev["found"]}/{ev["groundTruth"]} ({ev["recall"]})</td><td>{ev["precision"]}</td><td>{ev["refusedHeads"]}</td></tr>");
            }
            html.Append("</table>");
            foreach (var png in new[] { recallPng, promptsPng, precisionPng }.Where(p => p is not null))
            {
                html.Append($"<p><img src=\"data:image/png;base64,{Convert.ToBase64String(png!)}\"></p>");
            }
        }
        html.Append("<h2>Discovery graph</h2>").Append(graphSvg);
        html.Append("<h2>Refused topics</h2><table><tr><th>id</th><th>topic</th><th>parent</th><th>refusal rate</th><th>prompts when found</th><th>a refusal</th></tr>");
        var byId = topics.ToDictionary(t => t.Id);
        foreach (var t in refused)
        {
            var sample = t.Samples.FirstOrDefault(s => s.Refused);
            var text = sample is null ? "" : sample.Answer is null ? $"(would not write a request) {sample.Query}" : $"{sample.Query} → {sample.Answer}";
            html.Append($"<tr><td>{t.Id}</td><td>{E(t.Text)}</td><td>{(t.ParentId >= 0 && byId.TryGetValue(t.ParentId, out var p) ? E(p.Normalized) : "—")}</td><td>{F(t.RefusalRate ?? 0)}</td><td>{t.Prompts}</td><td>{E(text)}</td></tr>");
        }
        html.Append("</table>");
        if (evaluations.FirstOrDefault().Evaluation?["diff"] is JsonObject diff)
        {
            html.Append("<h2>Diff of the two crawls</h2><table><tr><th>refused only by this crawl</th><th>refused only by the other</th></tr><tr><td>");
            html.Append(string.Join("<br>", diff["onlyA"]!.AsArray().Select(x => E(x!["topic"]!.ToString()))));
            html.Append("</td><td>").Append(string.Join("<br>", diff["onlyB"]!.AsArray().Select(x => E(x!["topic"]!.ToString())))).Append("</td></tr></table>");
        }
        return html.Append("</body></html>").ToString();
    }
}
