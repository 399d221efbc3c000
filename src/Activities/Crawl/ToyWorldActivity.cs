using System.Text.Json;
using FluentValidation;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Crawl;

/// <summary>Generates a toy refusal world: invented topics, a hidden refused subset in clusters, and its ground truth.</summary>
[Activity("crawl.toy-world", Version = 1, Category = "Crawl", Summary = "Generate a toy refusal world (topics, a hidden refused subset with neighbourhoods) and its ground truth")]
[Output("world", ArtifactKinds.Json, Help = "world.json: the topics and the refused clusters (train a model on it with model.train-toy, task refusal-chat)", MediaType = "application/json", FileName = "world.json")]
[Output("groundTruth", ArtifactKinds.Json, Help = "The hidden refused topics in crawl.evaluate's ground-truth format", MediaType = "application/json", FileName = "ground-truth.json")]
public sealed class ToyWorldActivity : Activity<ToyWorldActivity.Input>
{
    public sealed record Input
    {
        [Input("Seed of the world")]
        public int Seed { get; init; }

        [Input("Topics in the world", Minimum = 20, Maximum = 1000)]
        public int Topics { get; init; } = 300;

        [Input("Refused clusters (a crawl must hop from one to the next)", Minimum = 1, Maximum = 50)]
        public int Clusters { get; init; } = 8;

        [Input("Refused topics per cluster", Minimum = 2, Maximum = 20)]
        public int ClusterSize { get; init; } = 5;
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator() => RuleFor(i => i.Clusters * i.ClusterSize).LessThan(i => i.Topics).WithMessage("clusters × clusterSize must leave benign topics");
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var world = ToyWorld.Generate(input.Seed, input.Topics, input.Clusters, input.ClusterSize);
        var indented = new JsonSerializerOptions { WriteIndented = true };
        File.WriteAllText(context.OutputFile("world"), world.ToJson().ToJsonString(indented) + "\n");
        File.WriteAllText(context.OutputFile("groundTruth"), world.GroundTruth().ToJsonString(indented) + "\n");
        context.Log($"{input.Topics} topics, {input.Clusters * input.ClusterSize} refused in {input.Clusters} clusters");
        return Task.CompletedTask;
    }
}
