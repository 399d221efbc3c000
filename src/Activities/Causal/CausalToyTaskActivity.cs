using System.Text.Json.Nodes;
using Pipelines.Activities.Data;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>The causal toy studies.</summary>
public enum CausalToy { Belief, Vignette }

/// <summary>Generates the datasets of a causal toy study (the model comes from model.train-toy with the same task).</summary>
[Activity("causal.toy-task", Version = 1, Category = "Causal", Summary = "Datasets of a causal toy study: belief tracking (lookback) or clinical vignettes (demographics)")]
[Output("counterfactuals", ArtifactKinds.Dataset, Help = "belief: labelled counterfactuals (pointer, payload, binding) for causal.featurizer and causal.iia", MediaType = "application/x-ndjson", FileName = "counterfactuals.jsonl")]
[Output("pairs", ArtifactKinds.Dataset, Help = "belief: patching pairs (the question about the other pair); vignette: transplant rows for patching.generate", MediaType = "application/x-ndjson", FileName = "pairs.jsonl")]
[Output("probing", ArtifactKinds.Dataset, Help = "vignette: course texts labelled by gender, grouped by template (probe.train); belief: stories labelled by the answer's slot", MediaType = "application/x-ndjson", FileName = "probing.jsonl")]
[Output("steering", ArtifactKinds.Dataset, Help = "vignette: \"the patient is female .\" against \"… male .\" (steering.vector); belief: the two slot orders", MediaType = "application/x-ndjson", FileName = "steering.jsonl")]
[Output("prompts", ArtifactKinds.Dataset, Help = "Prompts with a target and a foil for steering.evaluate: vignette, risk questions without a gender cue (yes vs no)", MediaType = "application/x-ndjson", FileName = "prompts.jsonl")]
public sealed class CausalToyTaskActivity : Activity<CausalToyTaskActivity.Input>
{
    public sealed record Input
    {
        [Input("belief (CausalToM-style belief tracking) or vignette (clinical vignettes with a planted demographic attribute)")]
        public CausalToy Task { get; init; } = CausalToy.Belief;

        [Input("Rows per variable (belief) or per dataset", Minimum = 4, Maximum = 100000)]
        public int Count { get; init; } = 256;

        [Input("Seed")]
        public long Seed { get; init; }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (input.Task == CausalToy.Belief)
        {
            Jsonl.Write(context.OutputFile("counterfactuals"), BeliefWorld.Counterfactuals(input.Count, input.Seed));
            Jsonl.Write(context.OutputFile("pairs"), BeliefWorld.Pairs(input.Count, input.Seed));
            var rng = new Pipelines.Models.Common.SeededRandom(input.Seed + 99);
            Jsonl.Write(context.OutputFile("probing"), Enumerable.Range(0, input.Count).Select(i =>
            {
                var story = BeliefWorld.Draw(rng, false);
                var r = rng.Next(2);
                return new JsonObject { ["text"] = story.Prompt(story.C[r], story.O[r]), ["label"] = r == 0 ? "first" : "second", ["group"] = $"{story.C[r]}" };
            }));
            Jsonl.Write(context.OutputFile("prompts"), BeliefWorld.Pairs(input.Count, input.Seed).Select(p => new JsonObject { ["text"] = p["clean"]!.GetValue<string>(), ["target"] = p["correct"]!.GetValue<string>(), ["foil"] = p["incorrect"]!.GetValue<string>() }));
            Jsonl.Write(context.OutputFile("steering"), [new JsonObject { ["positive"] = "ann cup tea . bob jar gin . question ann cup", ["negative"] = "ann cup tea . bob jar gin . question bob jar" }]);
        }
        else
        {
            Jsonl.Write(context.OutputFile("counterfactuals"), []);
            Jsonl.Write(context.OutputFile("pairs"), VignetteWorld.TransplantRows());
            Jsonl.Write(context.OutputFile("probing"), VignetteWorld.ProbeRows(input.Count, input.Seed));
            Jsonl.Write(context.OutputFile("steering"), VignetteWorld.SteeringRows());
            Jsonl.Write(context.OutputFile("prompts"), VignetteWorld.RiskPrompts());
        }
        context.Log($"{input.Task.ToString().ToLowerInvariant()}: datasets written (seed {input.Seed})");
        return Task.CompletedTask;
    }
}
