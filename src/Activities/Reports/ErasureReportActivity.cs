using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Activities.Erasure;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Reports;

/// <summary>
/// The erasure report: the erasure.probe rows merged into one methods × probes matrix, a heatmap of the normalised
/// scores, each method's classification and why, hand-off, relearning, per-layer probe and activation-norm curves, the
/// erasure dynamics over training checkpoints, and what each B′ says instead of the answer.
/// </summary>
[Activity("report.erasure", Version = 2, Category = "Reports", Summary = "HTML report of an erasure battery: the methods × probes heatmap, classifications, hand-off, relearning, per-layer probe curves, dynamics and alternative generations")]
[Output("report", ArtifactKinds.Report, Help = "report.html, self-contained", MediaType = "text/html", FileName = "report.html")]
[Output("matrix", ArtifactKinds.ErasureMatrix, Help = "matrix.json: every method's row in one matrix", MediaType = "application/json", FileName = "matrix.json")]
[Output("heatmap", ArtifactKinds.Plot, Help = "The methods × probes heatmap (SVG)", MediaType = "image/svg+xml", FileName = "heatmap.svg")]
public sealed class ErasureReportActivity : Activity<ErasureReportActivity.Input>
{
    public sealed record Input
    {
        [Input("erasure.probe matrices, one row each (or already merged)", Kind = ArtifactKinds.ErasureMatrix)]
        public required IReadOnlyList<Artifact> Matrices { get; init; }

        [Input("Title")]
        public string Title { get; init; } = "Erasure probing";
    }

    private static string E(string? s) => WebUtility.HtmlEncode(s ?? "");
    private static string F(double v) => v.ToString("0.###", CultureInfo.InvariantCulture);
    private static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (input.Matrices.Count == 0)
        {
            throw new ActivityException("inputs.matrices: connect at least one erasure.probe matrix");
        }
        var read = input.Matrices.Select(a => ErasureMatrix.Read(a.Path)).ToList();
        var concepts = read.Select(m => m["concept"]?.GetValue<string>() ?? "").Distinct().ToList();
        if (concepts.Count > 1)
        {
            throw new ActivityException($"inputs.matrices: they probe different concepts ({string.Join(", ", concepts)}); one report per concept");
        }
        var rows = read.SelectMany(m => m["methods"]!.AsArray().Select(r => r!.AsObject())).ToList();
        var modalities = read.Select(m => m["modality"]?.GetValue<string>() ?? "language").Distinct().ToList();
        if (modalities.Count > 1)
        {
            throw new ActivityException("inputs.matrices: they mix language-model and diffusion batteries; one report per modality");
        }
        var merged = ErasureMatrix.Matrix(concepts[0], rows, modalities[0]);
        ErasureMatrix.Write(context.OutputFile("matrix"), merged);
        var heatmap = Heatmap(rows);
        File.WriteAllText(context.OutputFile("heatmap"), heatmap, new UTF8Encoding(false));
        File.WriteAllText(context.OutputFile("report"), Html(input.Title, concepts[0], rows, heatmap, modalities[0]), new UTF8Encoding(false));
        context.Log($"{rows.Count} methods: " + string.Join("; ", rows.Select(r => $"{r["method"]} {r["classification"]}")));
        return Task.CompletedTask;
    }

    private static IEnumerable<JsonObject> Probes(JsonObject row) => row["probes"]!.AsArray().Select(p => p!.AsObject());
    private static string Name(JsonObject p) => p["probe"]!.GetValue<string>();
    private static double? Num(JsonNode? n) => n is JsonValue v && v.TryGetValue<double>(out var d) ? d : null;

    /// <summary>Normalised scores, methods down, probes across; 0 (gone) red to 1 (as B) green; hover for raw, B, N and the interval.</summary>
    public static string Heatmap(IReadOnlyList<JsonObject> rows)
    {
        var probes = rows.SelectMany(Probes).Select(Name).Distinct().ToList();
        const int cell = 58, left = 130, top = 110;
        var width = left + probes.Count * cell + 20;
        var height = top + rows.Count * 30 + 40;
        var svg = new StringBuilder($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">");
        for (var j = 0; j < probes.Count; j++)
        {
            var x = left + j * cell + cell / 2;
            svg.Append($"<text transform=\"translate({x},{top - 6}) rotate(-45)\">{E(probes[j])}</text>");
        }
        for (var i = 0; i < rows.Count; i++)
        {
            var y = top + i * 30;
            svg.Append($"<text x=\"{left - 6}\" y=\"{y + 19}\" text-anchor=\"end\">{E(rows[i]["method"]?.GetValue<string>())}</text>");
            var byName = Probes(rows[i]).ToDictionary(Name);
            for (var j = 0; j < probes.Count; j++)
            {
                var x = left + j * cell;
                if (!byName.TryGetValue(probes[j], out var p))
                {
                    svg.Append($"<rect x=\"{x}\" y=\"{y}\" width=\"{cell - 2}\" height=\"28\" fill=\"#fafafa\" stroke=\"#eee\"/>");
                    continue;
                }
                var n = Num(p["normalised"]);
                var fill = n is { } v ? Colour(v) : "#e0e0e0";
                var ci = p["ci"]?.AsArray();
                var tip = $"{probes[j]}: raw {F(Num(p["raw"]) ?? 0)}, B {F(Num(p["base"]) ?? 0)}, chance {F(Num(p["chance"]) ?? 0)}, N {p["n"]}, 95% CI [{F(Num(ci?[0]) ?? double.NaN)}, {F(Num(ci?[1]) ?? double.NaN)}]; {p["measure"]}";
                svg.Append($"<g><title>{E(tip)}</title><rect x=\"{x}\" y=\"{y}\" width=\"{cell - 2}\" height=\"28\" fill=\"{fill}\"/>");
                svg.Append($"<text x=\"{x + cell / 2 - 1}\" y=\"{y + 18}\" text-anchor=\"middle\">{(n is { } w ? F(Math.Round(w, 2)) : "n/a")}</text></g>");
            }
        }
        svg.Append($"<text x=\"{left}\" y=\"{height - 12}\">normalised to [chance, B]: 0 = chance (gone), 1 = as B; hover a cell for raw, B, N and the 95% interval</text></svg>");
        return svg.ToString();
    }

    private static string Colour(double v)
    {
        var t = Math.Clamp(v, 0, 1);
        // red (0) → yellow (0.5) → green (1)
        var (r, g) = t < 0.5 ? (230, (int)(80 + 300 * t)) : ((int)(230 - 300 * (t - 0.5)), 230);
        return $"rgb({Math.Clamp(r, 60, 240)},{Math.Clamp(g, 60, 240)},90)";
    }

    /// <summary>A small line chart: x labels, several named series (nulls skipped).</summary>
    public static string Lines(string title, IReadOnlyList<string> x, IReadOnlyList<(string Name, IReadOnlyList<double?> Values)> series, string yLabel, double? yMax = null)
    {
        const int w = 460, h = 240, l = 50, r = 120, t = 28, b = 36;
        var all = series.SelectMany(s => s.Values).Where(v => v is not null).Select(v => v!.Value).ToList();
        var max = yMax ?? Math.Max(1e-9, all.DefaultIfEmpty(1).Max() * 1.1);
        double X(int i) => l + (x.Count <= 1 ? 0 : i * (w - l - r) / (double)(x.Count - 1));
        double Y(double v) => h - b - Math.Clamp(v / max, 0, 1) * (h - t - b);
        var svg = new StringBuilder($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">");
        svg.Append($"<text x=\"{l}\" y=\"16\" font-weight=\"bold\">{E(title)}</text>");
        svg.Append($"<line x1=\"{l}\" y1=\"{h - b}\" x2=\"{w - r}\" y2=\"{h - b}\" stroke=\"#999\"/><line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{h - b}\" stroke=\"#999\"/>");
        svg.Append($"<text x=\"{l - 4}\" y=\"{t + 4}\" text-anchor=\"end\">{F(Math.Round(max, 2))}</text><text x=\"{l - 4}\" y=\"{h - b}\" text-anchor=\"end\">0</text>");
        svg.Append($"<text transform=\"translate(12,{(h - b + t) / 2}) rotate(-90)\" text-anchor=\"middle\">{E(yLabel)}</text>");
        for (var i = 0; i < x.Count; i++)
        {
            svg.Append($"<text x=\"{F(X(i))}\" y=\"{h - b + 14}\" text-anchor=\"middle\">{E(x[i])}</text>");
        }
        for (var s = 0; s < series.Count; s++)
        {
            var colour = Palette[s % Palette.Length];
            var points = series[s].Values.Select((v, i) => (v, i)).Where(p => p.v is not null).Select(p => $"{F(X(p.i))},{F(Y(p.v!.Value))}").ToList();
            if (points.Count > 0)
            {
                svg.Append($"<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{string.Join(' ', points)}\"/>");
                foreach (var p in points)
                {
                    var xy = p.Split(',');
                    svg.Append($"<circle cx=\"{xy[0]}\" cy=\"{xy[1]}\" r=\"2.5\" fill=\"{colour}\"/>");
                }
            }
            svg.Append($"<rect x=\"{w - r + 8}\" y=\"{t + s * 16}\" width=\"10\" height=\"10\" fill=\"{colour}\"/><text x=\"{w - r + 22}\" y=\"{t + s * 16 + 9}\">{E(series[s].Name)}</text>");
        }
        return svg.Append("</svg>").ToString();
    }

    /// <summary>The diffusion battery's curves: completion by hand-off, noise against its control, classifier guidance by scale, the dynamics, and what B′ draws instead.</summary>
    private static StringBuilder DiffusionSections(StringBuilder html, IReadOnlyList<JsonObject> rows)
    {
        html.Append("<h2>Curves</h2><div class=\"charts\">");
        void Curve(string probe, string key, string title, string xLabel)
        {
            var found = rows.Select(r => (Method(r), Probe(r, probe)?["details"]?[key]?.AsObject())).Where(p => p.Item2 is not null).ToList();
            if (found.Count == 0)
            {
                return;
            }
            var xs = found[0].Item2!.Select(k => k.Key).ToList();
            html.Append(Lines(title, xs, found.Select(h => (h.Item1, (IReadOnlyList<double?>)xs.Select(k => Num(h.Item2![k])).ToList())).ToList(), xLabel, 1));
        }
        Curve("completion", "accuracyByHandOff", "Completion: B runs k steps, B′ the rest", "concept accuracy");
        Curve("classifier-guidance", "accuracyByScale", "Classifier guidance on B′ by scale", "concept accuracy");
        var dynamics = rows.Select(r => (Method(r), r["dynamics"]?.AsArray())).Where(p => p.Item2 is { Count: > 0 }).ToList();
        if (dynamics.Count > 0)
        {
            var steps = dynamics.SelectMany(d => d.Item2!.Select(p => p!["step"]!.GetValue<int>())).Distinct().Order().ToList();
            IReadOnlyList<double?> At(JsonArray points, string key) => steps.Select(s => Num(points.FirstOrDefault(p => p!["step"]!.GetValue<int>() == s)?[key])).ToList();
            var labels = steps.Select(s => s.ToString(CultureInfo.InvariantCulture)).ToList();
            html.Append(Lines("Erasure dynamics: the concept when asked", labels, dynamics.Select(d => (d.Item1, At(d.Item2!, "concept"))).ToList(), "concept accuracy", 1));
            html.Append(Lines("Erasure dynamics: the other concepts", labels, dynamics.Select(d => (d.Item1, At(d.Item2!, "others"))).ToList(), "their accuracy", 1));
        }
        html.Append("</div>");
        var noise = rows.Select(r => (Method(r), Probe(r, "noise"), Probe(r, "noise-control"))).Where(p => p.Item2 is not null).ToList();
        if (noise.Count > 0)
        {
            html.Append("<h2>Noise probe against its control</h2><table><tr><th>method</th><th>η &gt; 1 best of N</th><th>plain DDIM best of N</th><th>N</th></tr>");
            foreach (var (m, p, c) in noise)
            {
                html.Append($"<tr><td>{E(m)}</td><td>{F(Num(p!["raw"]) ?? 0)}</td><td>{(c is null ? "" : F(Num(c["raw"]) ?? 0))}</td><td>{p!["n"]}</td></tr>");
            }
            html.Append("</table>");
        }
        var alternatives = rows.Select(r => (Method(r), Probe(r, "alternatives")?["details"])).Where(p => p.Item2?["shares"] is not null).ToList();
        if (alternatives.Count > 0)
        {
            var names = alternatives[0].Item2!["shares"]!.AsObject().Select(k => k.Key).ToList();
            html.Append("<h2>What B′ draws instead</h2><table><tr><th>method</th>").Append(string.Concat(names.Select(n => $"<th>{E(n)}</th>"))).Append("<th>entropy (bits)</th><th>top replacement</th></tr>");
            foreach (var (m, d) in alternatives)
            {
                html.Append($"<tr><td>{E(m)}</td>").Append(string.Concat(names.Select(n => $"<td>{F(Num(d!["shares"]![n]) ?? 0)}</td>")))
                    .Append($"<td>{F(Num(d!["entropyBits"]) ?? 0)}</td><td>{E(d["topReplacement"]?.GetValue<string>())}</td></tr>");
            }
            html.Append("</table><p><small>Shares of the scorer's top class on the concept's prompts. One dominant replacement suggests the prompt was redirected; spread shares a destroyed mode.</small></p>");
        }
        return html;
    }

    private static JsonObject? Probe(JsonObject row, string name) => Probes(row).FirstOrDefault(p => Name(p) == name);
    private static string Method(JsonObject row) => row["method"]?.GetValue<string>() ?? "";

    public static string Html(string title, string concept, IReadOnlyList<JsonObject> rows, string heatmap, string modality = "language")
    {
        var html = new StringBuilder();
        html.Append($"<!doctype html><html><head><meta charset=\"utf-8\"><title>{E(title)}</title><style>body{{font-family:sans-serif;margin:24px;max-width:1200px}}" +
            "table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f4f4f4}" +
            ".c-guidance-based{color:#b36b00;font-weight:bold}.c-destruction-based{color:#c0392b;font-weight:bold}.c-not-erased{color:#2e7d32;font-weight:bold}.c-mixed{color:#6a1b9a;font-weight:bold}" +
            ".charts svg{margin:6px 12px 6px 0;border:1px solid #eee}small{color:#666}</style></head><body>");
        html.Append($"<h1>{E(title)}</h1><p>Concept: <b>{E(concept)}</b>. {rows.Count} model(s) probed.</p>");
        html.Append("<h2>Verdicts</h2><table><tr><th>method</th><th>classification</th><th>why</th></tr>");
        foreach (var r in rows)
        {
            var cls = r["classification"]?.GetValue<string>() ?? "";
            html.Append($"<tr><td>{E(Method(r))}</td><td class=\"c-{E(cls.Replace(' ', '-'))}\">{E(cls)}</td><td>{E(r["reason"]?.GetValue<string>())}</td></tr>");
        }
        html.Append($"</table><p><small>Rule: {E(modality == "diffusion" ? ErasureMatrix.DiffusionRule : ErasureMatrix.Rule)}</small></p>");
        html.Append(modality == "diffusion"
            ? "<p><small>How to read it: <b>guidance-based</b> erasure redirects the concept's prompt, but the concept's unconditional density survives, so inpainting from its context, B starting the trajectory, extra sampling noise or a noisy-image classifier's guidance bring it back. <b>Destruction-based</b> erasure lowers the density itself, and those probes fail too; expect more interference on the neighbouring concepts.</small></p>"
            : "<p><small>How to read it: <b>guidance-based</b> erasure changes what the model does when asked, but the concept's text is as likely as before and an attack (a prefill, B starting the answer, context, noise, a trained prompt, steering) brings it back. <b>Destruction-based</b> erasure lowers the concept's likelihood itself, and the attacks fail too. Relearning is shown but not counted: fine-tuning on half the facts brings back the other half after either kind in the literature.</small></p>");
        html.Append("<h2>Methods × probes</h2>").Append(heatmap);
        html.Append("<table><tr><th>probe</th><th>measure</th>").Append(string.Concat(rows.Select(r => $"<th>{E(Method(r))}<br><small>raw (B) · N</small></th>"))).Append("</tr>");
        foreach (var name in rows.SelectMany(Probes).Select(Name).Distinct())
        {
            var measure = rows.Select(r => Probe(r, name)?["measure"]?.GetValue<string>()).FirstOrDefault(m => m is not null);
            html.Append($"<tr><td>{E(name)}</td><td><small>{E(measure)}</small></td>");
            foreach (var r in rows)
            {
                var p = Probe(r, name);
                html.Append(p is null ? "<td></td>" : $"<td>{F(Num(p["raw"]) ?? 0)} ({F(Num(p["base"]) ?? 0)}) · {p["n"]}</td>");
            }
            html.Append("</tr>");
        }
        html.Append("</table>");
        if (modality == "diffusion")
        {
            return DiffusionSections(html, rows).Append("</body></html>").ToString();
        }
        html.Append("<h2>Curves</h2><div class=\"charts\">");
        var handoff = rows.Select(r => (Method(r), Probe(r, "handoff")?["details"]?["byK"]?.AsObject())).Where(p => p.Item2 is not null).ToList();
        if (handoff.Count > 0)
        {
            var ks = handoff[0].Item2!.Select(k => k.Key).ToList();
            html.Append(Lines("Hand-off: B writes k tokens, B′ continues", ks, handoff.Select(h => (h.Item1, (IReadOnlyList<double?>)ks.Select(k => Num(h.Item2![k])).ToList())).ToList(), "facts completed", 1));
        }
        var layers = rows.Select(r => (Method(r), Probe(r, "layer-probes")?["details"]?.AsObject())).Where(p => p.Item2 is not null).ToList();
        if (layers.Count > 0)
        {
            var names = layers[0].Item2!["layers"]!.AsArray().Select(n => n!.GetValue<string>()).ToList();
            var series = new List<(string, IReadOnlyList<double?>)> { ("B", layers[0].Item2!["base"]!.AsArray().Select(Num).ToList()) };
            series.AddRange(layers.Select(l => (l.Item1, (IReadOnlyList<double?>)l.Item2!["erased"]!.AsArray().Select(Num).ToList())));
            html.Append(Lines("Linear probe accuracy per layer (answer from the residual stream)", names, series, "held-out accuracy", 1));
            var norms = new List<(string, IReadOnlyList<double?>)> { ("B", layers[0].Item2!["normsBase"]!.AsArray().Select(Num).ToList()) };
            norms.AddRange(layers.Select(l => (l.Item1, (IReadOnlyList<double?>)l.Item2!["normsErased"]!.AsArray().Select(Num).ToList())));
            html.Append(Lines("Residual norm per layer on concept text", names.Skip(1).ToList(), norms, "mean L2 norm"));
        }
        var relearning = rows.Select(r => (Method(r), Probe(r, "relearning")?["details"]?["curve"]?.AsObject())).Where(p => p.Item2 is not null).ToList();
        if (relearning.Count > 0)
        {
            var marks = relearning[0].Item2!["steps"]!.AsArray().Select(n => n!.ToJsonString()).ToList();
            var series = new List<(string, IReadOnlyList<double?>)>
            {
                ("B", relearning[0].Item2!["base"]!.AsArray().Select(Num).ToList()),
                ("never trained", relearning[0].Item2!["control"]!.AsArray().Select(Num).ToList()),
            };
            series.AddRange(relearning.Where(r => !r.Item1.StartsWith("none", StringComparison.Ordinal)).Select(r => (r.Item1, (IReadOnlyList<double?>)r.Item2!["erased"]!.AsArray().Select(Num).ToList())));
            html.Append(Lines("Relearning: held-out accuracy while fine-tuning on the other facts", marks, series, "accuracy", 1));
        }
        var dynamics = rows.Select(r => (Method(r), r["dynamics"]?.AsArray())).Where(p => p.Item2 is { Count: > 0 }).ToList();
        if (dynamics.Count > 0)
        {
            var steps = dynamics.SelectMany(d => d.Item2!.Select(p => p!["step"]!.GetValue<int>())).Distinct().Order().ToList();
            IReadOnlyList<double?> At(JsonArray points, string key) => steps.Select(s => Num(points.FirstOrDefault(p => p!["step"]!.GetValue<int>() == s)?[key])).ToList();
            html.Append(Lines("Erasure dynamics: accuracy when asked", steps.Select(s => s.ToString(CultureInfo.InvariantCulture)).ToList(), dynamics.Select(d => (d.Item1, At(d.Item2!, "asked"))).ToList(), "accuracy", 1));
            html.Append(Lines("Erasure dynamics: concept likelihood (B/B′ perplexity)", steps.Select(s => s.ToString(CultureInfo.InvariantCulture)).ToList(), dynamics.Select(d => (d.Item1, At(d.Item2!, "likelihood"))).ToList(), "ratio", 1));
        }
        html.Append("</div>");
        var relearn = rows.Select(r => (Method(r), Probe(r, "relearning"))).Where(p => p.Item2 is not null).ToList();
        if (relearn.Count > 0)
        {
            html.Append("<h2>Relearning</h2><table><tr><th>method</th><th>held-out before</th><th>after fine-tuning B′</th><th>same fine-tune of B</th><th>same fine-tune of a never-trained model</th></tr>");
            foreach (var (m, p) in relearn)
            {
                var d = p!["details"]!;
                html.Append($"<tr><td>{E(m)}</td><td>{F(Num(d["before"]) ?? 0)}</td><td>{F(Num(p["raw"]) ?? 0)}</td><td>{F(Num(d["baseAfter"]) ?? 0)}</td><td>{F(Num(d["control"]) ?? 0)}</td></tr>");
            }
            html.Append("</table>");
        }
        var alternatives = rows.Select(r => (Method(r), Probe(r, "alternatives")?["details"])).Where(p => p.Item2 is not null).ToList();
        if (alternatives.Count > 0)
        {
            html.Append("<h2>What B′ says instead</h2><table><tr><th>method</th><th>correct</th><th>another value</th><th>deflection</th><th>degraded</th></tr>");
            foreach (var (m, d) in alternatives)
            {
                var c = d!["classes"]!;
                html.Append($"<tr><td>{E(m)}</td><td>{F(Num(c["correct"]) ?? 0)}</td><td>{F(Num(c["other-value"]) ?? 0)}</td><td>{F(Num(c["deflection"]) ?? 0)}</td><td>{F(Num(c["degraded"]) ?? 0)}</td></tr>");
            }
            html.Append("</table><table><tr><th>method</th><th>question</th><th>answer</th><th>B says</th><th>B′ says</th><th>class</th></tr>");
            foreach (var (m, d) in alternatives)
            {
                foreach (var s in d!["samples"]!.AsArray().Take(4))
                {
                    html.Append($"<tr><td>{E(m)}</td><td>{E(s!["prompt"]?.GetValue<string>())}</td><td>{E(s["answer"]?.GetValue<string>())}</td><td>{E(s["base"]?.GetValue<string>())}</td><td>{E(s["erased"]?.GetValue<string>())}</td><td>{E(s["class"]?.GetValue<string>())}</td></tr>");
                }
            }
            html.Append("</table>");
        }
        return html.Append("</body></html>").ToString();
    }
}
