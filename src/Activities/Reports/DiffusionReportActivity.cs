using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Activities.Causal;
using Pipelines.Activities.Diffusion;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Reports;

/// <summary>One HTML page for a diffusion study: image grids, DT strips and curves, and the diversity, fidelity and cost table.</summary>
[Activity("report.diffusion", Version = 1, Category = "Reports", Summary = "HTML report of a diffusion study: image grids, DT-visualization strips and curves, a diversity / fidelity / cost table and the diversity-distillation verdict")]
[Output("report", ArtifactKinds.Report, Help = "A self-contained HTML page (figures embedded)", MediaType = "text/html", FileName = "diffusion.html")]
public sealed class DiffusionReportActivity : Activity<DiffusionReportActivity.Input>
{
    public sealed record Input
    {
        [Input("Image sets (diffusion.sample, diffusion.hybrid)", Kind = ArtifactKinds.Images)]
        public IReadOnlyList<Artifact> Images { get; init; } = [];

        [Input("DT strips (diffusion.dt-visualize's strips)", Kind = ArtifactKinds.Plot)]
        public IReadOnlyList<Artifact> Strips { get; init; } = [];

        [Input("DT curves (diffusion.dt-visualize's dt)", Kind = ArtifactKinds.Json)]
        public IReadOnlyList<Artifact> Dt { get; init; } = [];

        [Input("The diversity table (diffusion.diversity)", Kind = ArtifactKinds.Json)]
        public Artifact? Diversity { get; init; }

        [Input("Title")]
        public string Title { get; init; } = "Diffusion study";
    }

    private static string E(string? s) => WebUtility.HtmlEncode(s ?? "");
    private static string Img(string path) => $"<img alt=\"figure\" src=\"data:image/png;base64,{Convert.ToBase64String(File.ReadAllBytes(path))}\">";

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (input.Images.Count + input.Strips.Count + input.Dt.Count == 0 && input.Diversity is null)
        {
            throw new ActivityException("inputs: connect at least one of images, strips, dt or diversity");
        }
        var html = new StringBuilder();
        html.Append(CultureInfo.InvariantCulture, $"<!doctype html><html><head><meta charset=\"utf-8\"><title>{E(input.Title)}</title><style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1200px}}img{{max-width:100%;border:1px solid #ddd;margin:6px 0;image-rendering:pixelated}}table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}.ok{{color:#1b7f3b}}.no{{color:#b3261e}}</style></head><body><h1>{E(input.Title)}</h1>");
        if (input.Diversity is not null)
        {
            AppendDiversity(html, input.Diversity, context);
        }
        var scratch = Directory.CreateDirectory(Path.Combine(context.WorkDirectory, "figures")).FullName;
        foreach (var (dt, i) in input.Dt.Select((a, i) => (a, i)))
        {
            var doc = JsonNode.Parse(File.ReadAllText(dt.Path)) as JsonObject ?? throw new ActivityException($"dt[{i}]: not a JSON object");
            if (doc["format"]?.ToString() != "pipelines.dt/1")
            {
                throw new ActivityException($"dt[{i}]: $.format: expected \"pipelines.dt/1\"");
            }
            var steps = doc["perStep"]!.AsArray().OfType<JsonObject>().ToList();
            if (steps.All(s => s["distance"] is not null))
            {
                var path = Path.Combine(scratch, $"dt{i}.png");
                GridPlot.Curves(path, steps.Select(s => s["step"]!.ToString()).ToList(),
                    [("feature distance of x̂0 to the final image", steps.Select(s => (double?)s["distance"]!.GetValue<double>()).ToList()), ("share with the final shape", steps.Select(s => (double?)s["shapeSettled"]!.GetValue<double>()).ToList())],
                    $"DT-visualization: {doc["scheduler"]}, {doc["steps"]} steps, guidance {doc["guidance"]}", "value");
                html.Append(CultureInfo.InvariantCulture, $"<h2>When the image is decided ({E(doc["scheduler"]?.ToString())}, {doc["steps"]} steps)</h2>{Img(path)}");
            }
        }
        foreach (var (s, i) in input.Strips.Select((a, i) => (a, i)))
        {
            html.Append(CultureInfo.InvariantCulture, $"<h2>DT strips {i + 1}</h2><p>Each row is one sample: the predicted clean image x̂0 at evenly spaced steps, then the final image.</p>{Img(s.Path)}");
        }
        foreach (var (a, i) in input.Images.Select((a, i) => (a, i)))
        {
            var set = ImageSet.Read(a.Path, $"images[{i}]");
            html.Append(CultureInfo.InvariantCulture, $"<h2>{E(set.Sampler)}: {E(set.Description)}</h2><p>{set.Samples.Count} images, {set.UnetCalls} UNet calls each; one row per prompt ({E(string.Join(", ", set.Prompts.Take(16)))}{(set.Prompts.Count > 16 ? ", …" : "")}).");
            if (set.FidelityShape is not null)
            {
                html.Append(CultureInfo.InvariantCulture, $" Fidelity: shape {ImageSet.Percent(set.FidelityShape)}, colour {ImageSet.Percent(set.FidelityColour)} (scorer on clean images: shape {ImageSet.Percent(set.Scorer?.Shape)}, colour {ImageSet.Percent(set.Scorer?.Colour)}).");
            }
            html.Append("</p>").Append(Img(Path.Combine(a.Path, "grid.png")));
        }
        html.Append("</body></html>\n");
        File.WriteAllText(context.OutputFile("report"), html.ToString());
        return Task.CompletedTask;
    }

    private static void AppendDiversity(StringBuilder html, Artifact artifact, ActivityContext context)
    {
        var doc = JsonNode.Parse(File.ReadAllText(artifact.Path)) as JsonObject ?? throw new ActivityException("diversity: not a JSON object");
        if (doc["format"]?.ToString() != "pipelines.diversity/1")
        {
            throw new ActivityException("diversity: $.format: expected \"pipelines.diversity/1\"");
        }
        var sets = doc["sets"]!.AsArray().OfType<JsonObject>().ToList();
        html.Append(CultureInfo.InvariantCulture, $"<h2>Diversity, fidelity and cost</h2><p>Diversity: {E(doc["metric"]?.ToString())}. Fréchet distance: scorer features against real images of the prompted factors (lower is closer). The scorer reads clean images at shape {ImageSet.Percent(doc["scorer"]?["shape"]?.GetValue<double>())}, colour {ImageSet.Percent(doc["scorer"]?["colour"]?.GetValue<double>())}.</p>");
        html.Append("<table><tr><th>sampler</th><th>how</th><th>UNet calls / image</th><th>s / image</th><th>fidelity shape</th><th>fidelity colour</th><th>diversity</th><th>Fréchet</th></tr>");
        foreach (var s in sets)
        {
            html.Append(CultureInfo.InvariantCulture, $"<tr><td>{E(s["sampler"]?.ToString())}</td><td>{E(s["description"]?.ToString())}</td><td>{s["unetCalls"]}</td><td>{s["secondsPerImage"]}</td><td>{ImageSet.Percent(s["fidelityShape"]?.GetValue<double>())}</td><td>{ImageSet.Percent(s["fidelityColour"]?.GetValue<double>())}</td><td>{s["diversity"]!.GetValue<double>():F4}</td><td>{s["frechet"]!.GetValue<double>():F3}</td></tr>");
        }
        html.Append("</table>");
        var by = sets.GroupBy(s => s["sampler"]!.ToString()).ToDictionary(g => g.Key, g => g.First());
        if (by.TryGetValue("base", out var b) && by.TryGetValue("student", out var st) && by.TryGetValue("hybrid", out var h))
        {
            double D(JsonObject o) => o["diversity"]!.GetValue<double>();
            int C(JsonObject o) => o["unetCalls"]!.GetValue<int>();
            string Mark(bool ok) => ok ? "<span class=\"ok\">yes</span>" : "<span class=\"no\">no</span>";
            var hybridAtLeastBase = D(h) >= D(b);
            var studentBelowBase = D(st) < D(b);
            var costClose = C(h) - C(st) <= Math.Max(2, (C(b) - C(st)) / 4);
            html.Append(CultureInfo.InvariantCulture, $"<h3>The diversity-distillation finding, on this model</h3><ul><li>The student is less diverse than the base: {Mark(studentBelowBase)} ({D(st):F4} vs {D(b):F4}).</li><li>The hybrid is at least as diverse as the base: {Mark(hybridAtLeastBase)} ({D(h):F4} vs {D(b):F4}).</li><li>The hybrid costs close to the student: {Mark(costClose)} ({C(h)} UNet calls per image vs the student's {C(st)} and the base's {C(b)}).</li></ul>");
            var verdict = hybridAtLeastBase && studentBelowBase && costClose ? "shown" : "not shown";
            html.Append(CultureInfo.InvariantCulture, $"<p><b>Finding {verdict} on this model.</b></p>");
            context.Log($"diversity: base {D(b):F4}, student {D(st):F4}, hybrid {D(h):F4}; UNet calls {C(b)} / {C(st)} / {C(h)}: finding {verdict}");
        }
    }
}
