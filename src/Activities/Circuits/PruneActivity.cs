using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Circuits.Faithfulness;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Circuits;

/// <summary>Chooses a circuit from edge scores: top-n or greedy, by signed or absolute score, pruned to a fixpoint.</summary>
[Activity("circuits.prune", Version = 2, Category = "Circuits", Summary = "Choose a circuit from edge scores (top-n or greedy, signed or absolute), pruned to a fixpoint")]
[Output("circuit", ArtifactKinds.Circuit, Help = "MIB JSON graph: every edge's score and in_graph flag; nodes in_graph", MediaType = "application/json", FileName = "circuit.json")]
public sealed class PruneActivity : Activity<PruneActivity.Input>
{
    public sealed record Input
    {
        [Input("Edge scores from circuits.attribute", Kind = ArtifactKinds.Scores)]
        public required Artifact Scores { get; init; }

        [Input("top-n (MIB) or greedy (grown from the logits)")]
        public SelectionMethod Selection { get; init; } = SelectionMethod.TopN;

        [Input("Rank by |score| (MIB's CMD convention) instead of the signed score (CPR's)")]
        public bool Absolute { get; init; }

        [Input("Keep this many edges before pruning (0: use fraction)", Minimum = 0)]
        public long Edges { get; init; }

        [Input("Or keep this fraction of the edges", Minimum = 0, Maximum = 1)]
        public double Fraction { get; init; } = 0.05;

        [Input("Positional scores (PEAP): abstract edges to take in the search from the last span's logits", Minimum = 1)]
        public int TopK { get; init; } = 100;

        [Input("Positional scores: the span statistic to rank by (sum, avg, sum_abs_pos, sum_abs_exp, max_abs)")]
        public string Statistic { get; init; } = "sum";
    }

    /// <summary>One of the two sizes.</summary>
    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Fraction).GreaterThan(0).When(i => i.Edges == 0).WithMessage("expected edges > 0 or a fraction > 0");
            RuleFor(i => i.Statistic).Must(s => PositionalScores.Statistics.Contains(s))
                .WithMessage(i => $"unknown statistic \"{Pipelines.Engine.Definitions.WorkflowParser.Short(i.Statistic)}\"; expected one of: {string.Join(", ", PositionalScores.Statistics)}");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var (graph, scores, index) = ScoresFile.Read(input.Scores.Path);
        if (PositionalScoresFile.Exists(input.Scores.Path))
        {
            var spans = index.Info.Positional?.Spans ?? throw new ActivityException("the scores have positional.safetensors but their index names no spans");
            var grid = PositionalScoresFile.Read(input.Scores.Path, spans, input.Statistic);
            var positional = PositionalCircuit.Search(graph, grid, input.TopK, input.Absolute);
            var pjson = positional.ToJson(grid, input.Absolute);
            pjson["cfg"] = index.Cfg.DeepClone();
            pjson["scoring"] = index.Info.Scoring();
            pjson["selection"] = new JsonObject { ["method"] = "peap-greedy", ["topK"] = input.TopK, ["statistic"] = input.Statistic, ["absolute"] = input.Absolute, ["kept"] = positional.Edges.Count };
            File.WriteAllText(context.OutputFile("circuit"), pjson.ToJsonString() + "\n");
            context.Log($"positional circuit: {positional.Edges.Count} abstract edges kept of the top {input.TopK} ({input.Statistic}{(input.Absolute ? ", |score|" : "")})");
            return Task.CompletedTask;
        }
        var n = input.Edges > 0 ? input.Edges : (long)(input.Fraction * graph.EdgeCount);
        var circuit = input.Selection == SelectionMethod.TopN
            ? Circuit.TopN(graph, scores, n, input.Absolute)
            : Circuit.Greedy(graph, scores, n, input.Absolute);
        var json = ScoresFile.MibJson(graph, scores, circuit, index.DModel, index.Info.Scoring());
        json["selection"] = new JsonObject
        {
            ["method"] = input.Selection == SelectionMethod.TopN ? "top-n" : "greedy",
            ["absolute"] = input.Absolute,
            ["requested"] = n,
            ["kept"] = circuit.EdgeCount,
        };
        File.WriteAllText(context.OutputFile("circuit"), json.ToJsonString() + "\n");
        context.Log($"kept {circuit.EdgeCount} of {n} requested edges after pruning ({graph.EdgeCount} in the graph)");
        return Task.CompletedTask;
    }
}
