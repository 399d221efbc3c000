using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Activities.Causal;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Reports;

/// <summary>One HTML page for a causal study: patching heatmaps, probe curves, IIA heatmaps and curves, the leaderboard summary and drill-downs.</summary>
[Activity("report.causal", Version = 1, Category = "Reports", Summary = "HTML report of a causal study: patching heatmaps, probe curves, IIA heatmaps and curves, leaderboard numbers and example drill-downs")]
[Output("report", ArtifactKinds.Report, Help = "A self-contained HTML page (figures embedded)", MediaType = "text/html", FileName = "causal.html")]
public sealed class CausalReportActivity : Activity<CausalReportActivity.Input>
{
    public sealed record Input
    {
        [Input("Patching grids (patching.sweep)", Kind = ArtifactKinds.PatchingGrid)]
        public IReadOnlyList<Artifact> Grids { get; init; } = [];

        [Input("Probe results (probe.train's results)", Kind = ArtifactKinds.ProbeResults)]
        public IReadOnlyList<Artifact> Probes { get; init; } = [];

        [Input("IIA results (causal.iia)", Kind = ArtifactKinds.IIAResults)]
        public IReadOnlyList<Artifact> Iia { get; init; } = [];

        [Input("Title")]
        public string Title { get; init; } = "Causal variables";
    }

    private static string E(string? s) => WebUtility.HtmlEncode(s ?? "");
    private static string P(double v) => double.IsFinite(v) ? v.ToString("0.0%", CultureInfo.InvariantCulture) : "–";

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (input.Grids.Count + input.Probes.Count + input.Iia.Count == 0)
        {
            throw new ActivityException("inputs: connect at least one of grids, probes or iia");
        }
        var scratch = Directory.CreateDirectory(Path.Combine(context.WorkDirectory, "figures")).FullName;
        var n = 0;
        string Figure(Action<string> draw)
        {
            var path = Path.Combine(scratch, $"f{n++}.png");
            draw(path);
            return $"<img alt=\"figure\" src=\"data:image/png;base64,{Convert.ToBase64String(File.ReadAllBytes(path))}\">";
        }
        var html = new StringBuilder();
        html.Append(CultureInfo.InvariantCulture, $"<!doctype html><html><head><meta charset=\"utf-8\"><title>{E(input.Title)}</title><style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1200px}}img{{max-width:100%;border:1px solid #ddd;margin:6px 0}}table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px}}.ok{{color:#1b7f3b}}.no{{color:#b3261e}}</style></head><body><h1>{E(input.Title)}</h1>");
        foreach (var a in input.Grids)
        {
            var g = PatchingGrid.Read(a.Path, "grids");
            html.Append(CultureInfo.InvariantCulture, $"<h2>Patching: {E(g.Direction)} {E(g.Hook)}</h2><p>{E(g.Metric)} on {g.Pairs} pairs: clean {g.Clean:F3}, corrupted {g.Corrupted:F3}. Values are {E(g.Normalisation)}.</p>");
            html.Append(Figure(path => GridPlot.Heatmap(path, g.Values, g.Layers.Select(l => $"L{l}").ToList(), g.Positions, $"{g.Direction} {g.Hook}", "position", "layer", diverging: true)));
        }
        foreach (var a in input.Probes)
        {
            var r = ProbeResults.Read(a.Path, "probes");
            var best = r.Best;
            html.Append(CultureInfo.InvariantCulture, $"<h2>Probes on {E(r.Hook)} ({E(string.Join(" / ", r.Classes))})</h2><p>{r.Train}/{r.Validation}/{r.Test} rows, chance {P(r.Chance)}. Best selectivity at layer {best.Layer}, {E(best.Position)}: accuracy {P(best.Accuracy)} [{P(best.Low)}, {P(best.High)}], control {P(best.Control)}. Read layers by selectivity, and pair them with an intervention: decodable is not the same as used.</p>");
            var series = r.Positions.SelectMany((p, k) => new[]
            {
                ($"probe, {p}", (IReadOnlyList<double?>)r.Cells.Select(c => (double?)c[k].Accuracy).ToList()),
                ($"control, {p}", (IReadOnlyList<double?>)r.Cells.Select(c => (double?)c[k].Control).ToList()),
            }).ToList();
            html.Append(Figure(path => GridPlot.Curves(path, r.Layers.Select(l => $"L{l}").ToList(), series, "Probe accuracy by layer", "test accuracy", r.Chance)));
        }
        if (input.Iia.Count > 0)
        {
            html.Append("<h2>Interchange intervention accuracy</h2><table><tr><th>variable</th><th>featurizer</th><th>hook</th><th>rows</th><th>Average</th><th>Best</th><th>best unit</th></tr>");
            var docs = input.Iia.Select(a => (JsonNode.Parse(File.ReadAllText(a.Path)) ?? throw new ActivityException("iia: empty file"))).ToList();
            foreach (var doc in docs)
            {
                var meta = doc["pipelines"] ?? throw new ActivityException("iia: not a causal.iia results file (no \"pipelines\" section)");
                var units = Iia.ReadUnits(doc);
                var top = units.MaxBy(u => u.Iia);
                html.Append(CultureInfo.InvariantCulture, $"<tr><td>{E(meta["variable"]?.ToString())}</td><td>{E(meta["featurizer"]?.ToString())}</td><td>{E(meta["hook"]?.ToString())}</td><td>{meta["filter"]?["kept"]}</td><td>{P(meta["average"]!.GetValue<double>())}</td><td>{P(meta["best"]!.GetValue<double>())}</td><td>L{top.Layer}.{E(top.Position)}</td></tr>");
            }
            html.Append("</table>");
            foreach (var doc in docs)
            {
                var meta = doc["pipelines"]!;
                var units = Iia.ReadUnits(doc);
                var layers = units.Select(u => u.Layer).Distinct().Order().ToList();
                var positions = units.Select(u => u.Position).Distinct().ToList();
                double? At(int l, string p) => units.Where(u => u.Layer == l && u.Position == p).Select(u => (double?)u.Iia).FirstOrDefault();
                var title = $"{meta["variable"]}: {meta["featurizer"]} on {meta["hook"]}";
                html.Append(CultureInfo.InvariantCulture, $"<h3>{E(title)}</h3>");
                html.Append(Figure(path => GridPlot.Heatmap(path, layers.Select(l => (IReadOnlyList<double?>)positions.Select(p => At(l, p)).ToList()).ToList(), layers.Select(l => $"L{l}").ToList(), positions, title, "position", "layer", diverging: false)));
                html.Append(Figure(path => GridPlot.Curves(path, layers.Select(l => $"L{l}").ToList(), positions.Select(p => (p, (IReadOnlyList<double?>)layers.Select(l => At(l, p)).ToList())).ToList(), title, "IIA")));
                if (meta["examples"]?["rows"] is JsonArray rows)
                {
                    html.Append(CultureInfo.InvariantCulture, $"<p>Examples at L{meta["examples"]!["layer"]}.{E(meta["examples"]!["position"]?.ToString())}:</p><table><tr><th>base</th><th>source</th><th>expected</th><th>got</th></tr>");
                    foreach (var row in rows.OfType<JsonObject>())
                    {
                        var ok = row["correct"]?.GetValue<bool>() == true;
                        html.Append(CultureInfo.InvariantCulture, $"<tr><td>{E(row["base"]?.ToString())}</td><td>{E(row["source"]?.ToString())}</td><td><b>{E(row["expected"]?.ToString())}</b></td><td class=\"{(ok ? "ok" : "no")}\">{E(row["got"]?.ToString())}</td></tr>");
                    }
                    html.Append("</table>");
                }
            }
        }
        html.Append("</body></html>\n");
        File.WriteAllText(context.OutputFile("report"), html.ToString());
        return Task.CompletedTask;
    }
}
