using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Activities.Crawl;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Reports;

/// <summary>A self-contained HTML report of a crawl: discovery graph, recall and precision curves, refused topics, diff.</summary>
[Activity("report.crawl", Version = 1, Category = "Reports", Summary = "HTML report of a crawl: discovery graph, recall and precision against budget, refused topics with a sample refusal, diff of two crawls")]
[Output("report", ArtifactKinds.Report, Help = "report.html, self-contained", MediaType = "text/html", FileName = "report.html")]
[Output("graph", ArtifactKinds.Plot, Help = "The discovery graph (SVG)", MediaType = "image/svg+xml", FileName = "discovery.svg")]
[Output("recall", ArtifactKinds.Plot, Help = "Recall against topic ids (PNG)", MediaType = "image/png", FileName = "recall.png")]
public sealed class CrawlReportActivity : Activity<CrawlReportActivity.Input>
{
    public sealed record Input
    {
        [Input("The crawl (from crawl.expand)", Kind = ArtifactKinds.Topics)]
        public required Artifact Topics { get; init; }

        [Input("Its stats (from crawl.expand)", Kind = ArtifactKinds.Json)]
        public Artifact? Stats { get; init; }

        [Input("Its evaluation (from crawl.evaluate)", Kind = ArtifactKinds.Json)]
        public Artifact? Evaluation { get; init; }

        [Input("A second crawl's evaluation to plot beside it (e.g. the baseline)", Kind = ArtifactKinds.Json)]
        public Artifact? OtherEvaluation { get; init; }

        [Input("Names of the two crawls in the plots")]
        public IReadOnlyList<string> Names { get; init; } = ["crawler", "baseline"];

        [Input("Title")]
        public string Title { get; init; } = "Refusal discovery";
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var topics = TopicsFile.Read(input.Topics.Path, "topics");
        JsonObject? Read(Artifact? a) => a is null ? null : JsonNode.Parse(File.ReadAllText(a.Path)) as JsonObject
            ?? throw new ActivityException($"{a.FileName}: expected a JSON object");
        var evaluations = new[] { Read(input.Evaluation), Read(input.OtherEvaluation) }
            .Select((e, i) => (Name: i < input.Names.Count ? input.Names[i] : $"crawl {i + 1}", Evaluation: e!)).Where(e => e.Evaluation is not null).ToList();
        if (evaluations.Any(e => e.Evaluation["recallByTopicId"] is null))
        {
            throw new ActivityException("evaluation: expected crawl.evaluate's output (no recallByTopicId)");
        }
        var graph = CrawlReport.DiscoveryGraph(topics);
        File.WriteAllText(context.OutputFile("graph"), graph, new UTF8Encoding(false));
        byte[]? Png(ScottPlot.Plot plot) => plot.GetImageBytes(800, 400, ScottPlot.ImageFormat.Png);
        byte[]? recall = null, prompts = null, precision = null;
        if (evaluations.Count > 0)
        {
            recall = Png(CrawlReport.Curves(evaluations, "recallByTopicId", "topic ids (every extracted topic, duplicates included)"));
            prompts = Png(CrawlReport.Curves(evaluations, "recallByPrompts", "prompts sent to the target"));
            precision = Png(CrawlReport.Precision(evaluations));
        }
        File.WriteAllBytes(context.OutputFile("recall"), recall ?? Png(new ScottPlot.Plot())!);
        var html = CrawlReport.Html(input.Title, topics, Read(input.Stats), evaluations, graph, recall, prompts, precision);
        File.WriteAllText(context.OutputFile("report"), html, new UTF8Encoding(false));
        return Task.CompletedTask;
    }
}
