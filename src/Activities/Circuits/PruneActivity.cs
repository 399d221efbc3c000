using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Faithfulness;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Circuits;

/// <summary>Chooses a circuit from edge scores: top-n or greedy, by signed or absolute score, pruned to a fixpoint.</summary>
[Activity("circuits.prune", Version = 1, Category = "Circuits", Summary = "Choose a circuit from edge scores (top-n or greedy, signed or absolute), pruned to a fixpoint")]
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
    }

    /// <summary>One of the two sizes.</summary>
    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Fraction).GreaterThan(0).When(i => i.Edges == 0).WithMessage("expected edges > 0 or a fraction > 0");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var (graph, scores, index) = ScoresFile.Read(input.Scores.Path);
        var n = input.Edges > 0 ? input.Edges : (long)(input.Fraction * graph.EdgeCount);
        var circuit = input.Selection == SelectionMethod.TopN
            ? Circuit.TopN(graph, scores, n, input.Absolute)
            : Circuit.Greedy(graph, scores, n, input.Absolute);
        var json = ScoresFile.MibJson(graph, scores, circuit, index["cfg"]!["d_model"]!.GetValue<int>());
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
