using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Adapters;
using Pipelines.Models.Transformer;

namespace Pipelines.Activities.Erasure;

/// <summary>
/// The erasure probe battery on one erased model B′ against its base B: every probe's recovered concept accuracy, raw
/// and normalised to [chance, B], N and a bootstrap interval, and the classification (guidance-based,
/// destruction-based, not erased or mixed) with its rule. report.erasure merges several into the methods × probes matrix.
/// </summary>
[Activity("erasure.probe", Version = 3, Category = "Erasure", Summary = "Probe an erased model B′ against its base B (direct, prefill, hand-off, noise, in-context, soft prompt, hard prefix, probe steering, layer probes, relearning, interference, likelihood, alternatives) and classify the erasure")]
[Output("matrix", ArtifactKinds.ErasureMatrix, Help = "matrix.json (pipelines.erasure-matrix/1): this method's row of probes, its classification and the rule", MediaType = "application/json", FileName = "matrix.json")]
public sealed class ErasureProbeActivity : Activity<ErasureProbeActivity.Input>
{
    public sealed record Input
    {
        [Input("The base model B", Kind = ArtifactKinds.Model)]
        public required Artifact Base { get; init; }

        [Input("The erased model B′ (from erasure.train, or model.load with an adapter)", Kind = ArtifactKinds.Model)]
        public required Artifact Erased { get; init; }

        [Input("The method's name in the matrix")]
        public string Method { get; init; } = "erased";

        [Input("A concept world (erasure.concept-world's world); with domain, the concept is that domain", Kind = ArtifactKinds.Json)]
        public Artifact? World { get; init; }

        [Input("The world's domain that was erased")]
        public string Domain { get; init; } = "";

        [Input("Real data: the concept's MCQs (lm-eval / WMDP layout, or the Harry Potter layout; JSON or JSONL)", Kind = ArtifactKinds.Dataset)]
        public Artifact? Mcq { get; init; }

        [Input("Real data: the concept's text (JSONL with \"text\", or one document per line)", Kind = ArtifactKinds.Dataset)]
        public Artifact? Forget { get; init; }

        [Input("Real data: other text (for the concept probe and far-neighbour perplexity)", Kind = ArtifactKinds.Dataset)]
        public Artifact? Retain { get; init; }

        [Input("Real data: MCQs on a near neighbour concept (interference)", Kind = ArtifactKinds.Dataset)]
        public Artifact? Near { get; init; }

        [Input("Real data: MCQs on far concepts (interference)", Kind = ArtifactKinds.Dataset)]
        public Artifact? Far { get; init; }

        [Input("Real data: the concept's keywords (ELM's expert/novice contexts)")]
        public string Concept { get; init; } = "";

        [Input("Real data: how a question is asked ({question} is replaced; e.g. a chat template's user turn and the assistant's opening)")]
        public string Template { get; init; } = ConceptData.DefaultTemplate;

        [Input("Prefill attack: answer-turn openings (default: \"Sure, the answer is\" and \"I know that. The answer is\"; the concept world's own in its words)")]
        public IReadOnlyList<string> Prefills { get; init; } = [];

        [Input("Erasure checkpoints along training (erasure.train's checkpoints: adapters on B), for the dynamics", Kind = ArtifactKinds.Checkpoints)]
        public Artifact? Checkpoints { get; init; }

        [Input("Probes to run (default: all)")]
        public IReadOnlyList<string> Probes { get; init; } = ErasureBattery.AllProbes;

        [Input("Held-out questions scored per probe", Minimum = 4, Maximum = 100_000)]
        public int Questions { get; init; } = 100;

        [Input("Hand-off: how many tokens B writes before B′ continues")]
        public IReadOnlyList<int> HandOff { get; init; } = [0, 1, 2, 4, 8];

        [Input("Soft prompt: virtual tokens", Minimum = 1, Maximum = 64)]
        public int SoftTokens { get; init; } = 4;

        [Input("Soft prompt: Adam steps", Minimum = 0, Maximum = 100_000)]
        public int SoftSteps { get; init; } = 100;

        [Input("Hard prefix: tokens", Minimum = 1, Maximum = 32)]
        public int PrefixTokens { get; init; } = 3;

        [Input("Hard prefix: swap iterations", Minimum = 0, Maximum = 10_000)]
        public int PrefixSteps { get; init; } = 20;

        [Input("Relearning: fine-tuning steps on the train split", Minimum = 0, Maximum = 100_000)]
        public int RelearnSteps { get; init; } = 30;

        [Input("Seed for splits, sampling and trained probes")]
        public long Seed { get; init; }
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleForEach(i => i.Probes).Must(p => ErasureBattery.AllProbes.Contains(p)).WithMessage((_, p) => $"unknown probe \"{p}\"; expected one of {string.Join(", ", ErasureBattery.AllProbes)}");
            RuleFor(i => i.Method).NotEmpty();
            RuleForEach(i => i.HandOff).InclusiveBetween(0, 64);
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var data = Data(input);
        if (input.Prefills.Count > 0)
        {
            data = data.WithPrefills(input.Prefills);
        }
        var (baseModel, baseTokenizer) = ModelArtifacts.Open(input.Base);
        using var _b = baseModel;
        var (erasedModel, erasedTokenizer) = ModelArtifacts.Open(input.Erased);
        using var _e = erasedModel;
        if (baseModel.Config.DVocab != erasedModel.Config.DVocab || baseTokenizer.Encode(data.Ask(data.Target[0])).SequenceEqual(erasedTokenizer.Encode(data.Ask(data.Target[0]))) is false)
        {
            throw new ActivityException("inputs.erased: B′ does not share B's tokenizer; erase a copy of the base model");
        }
        var settings = new BatterySettings
        {
            Questions = input.Questions, HandOff = input.HandOff, SoftTokens = input.SoftTokens, SoftSteps = input.SoftSteps,
            PrefixTokens = input.PrefixTokens, PrefixSteps = input.PrefixSteps, RelearnSteps = input.RelearnSteps, Seed = input.Seed,
        };
        var probes = input.Probes.Distinct().ToList();
        var done = 0;
        var battery = new ErasureBattery(new ProbeKit(baseModel, baseTokenizer), new ProbeKit(erasedModel, erasedTokenizer), data, settings,
            () => ModelArtifacts.Open(input.Base).Model, () => ModelArtifacts.Open(input.Erased).Model,
            probe => context.Report((double)done++ / probes.Count, $"{input.Method}: {probe}"));
        var results = new List<ProbeResult>();
        foreach (var r in battery.Run(probes))
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            results.Add(r);
            context.Log($"{r.Probe}: {r.Raw:F3} (B {r.Base:F3}, normalised {(r.Normalised is { } n ? n.ToString("F2", System.Globalization.CultureInfo.InvariantCulture) : "n/a")}, N {r.N})");
        }
        var extra = new JsonObject { ["questions"] = data.HeldOut(input.Questions).Count };
        if (input.Checkpoints is { } checkpoints)
        {
            extra["dynamics"] = Dynamics(checkpoints, input, data, baseTokenizer, context);
        }
        var row = ErasureMatrix.Row(input.Method, input.Erased.Digest, results, extra);
        ErasureMatrix.Write(context.OutputFile("matrix"), ErasureMatrix.Matrix(data.Concept, [row]));
        context.Log($"{input.Method}: {row["classification"]} ({row["reason"]})");
        return Task.CompletedTask;
    }

    internal static ConceptData Data(Input input) => Data(input.World, input.Domain, input.Mcq, input.Forget, input.Retain, input.Near, input.Far, input.Concept, input.Seed, input.Template);

    internal static ConceptData Data(Artifact? world, string domain, Artifact? mcq, Artifact? forget, Artifact? retain, Artifact? near, Artifact? far, string concept, long seed, string template)
    {
        if (world is not null)
        {
            if (domain.Length == 0)
            {
                throw new ActivityException("inputs.domain: name the world's erased domain (e.g. \"volcanoes\")");
            }
            try
            {
                return ConceptData.FromWorld(ConceptWorld.Read(world.Path), domain);
            }
            catch (ArgumentException e)
            {
                throw new ActivityException($"inputs.domain: {e.Message}");
            }
        }
        if (mcq is null || forget is null || retain is null)
        {
            throw new ActivityException("inputs: give a world (erasure.concept-world) and a domain, or the concept's mcq, forget and retain datasets");
        }
        return ConceptData.FromFiles(concept.Length > 0 ? concept : "the concept", McqFiles.Read(mcq.Path, "mcq"), McqFiles.Texts(forget.Path, "forget"), McqFiles.Texts(retain.Path, "retain"),
            near is null ? null : McqFiles.Read(near.Path, "near"), far is null ? null : McqFiles.Read(far.Path, "far"), seed, template);
    }

    /// <summary>Concept accuracy when asked and the likelihood ratio at each erasure checkpoint (adapters applied to B).</summary>
    private static JsonArray Dynamics(Artifact checkpoints, Input input, ConceptData data, Pipelines.Models.Tokenizers.ITextTokenizer tokenizer, ActivityContext context)
    {
        var steps = Directory.Exists(checkpoints.Path)
            ? Directory.GetDirectories(checkpoints.Path, "step-*").Order(StringComparer.Ordinal).ToList()
            : [];
        var heldOut = data.HeldOut(Math.Min(input.Questions, 60));
        var texts = data.TargetLikelihood.Take(200).ToList();
        var (reference, _) = ModelArtifacts.Open(input.Base);
        double[] baseNll;
        using (reference)
        {
            baseNll = new ProbeKit(reference, tokenizer).Nll(texts);
        }
        var points = new JsonArray();
        foreach (var dir in steps)
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            var (model, _) = ModelArtifacts.Open(input.Base);
            using (model)
            {
                var adapter = LoraAdapter.Load(dir, model.Config, model.W_E.device);
                using (adapter)
                {
                    adapter.Attach(model);
                    adapter.Merge();
                    var kit = new ProbeKit(model, tokenizer);
                    var nll = kit.Nll(texts);
                    points.Add(new JsonObject
                    {
                        ["step"] = int.Parse(Path.GetFileName(dir)["step-".Length..], System.Globalization.CultureInfo.InvariantCulture),
                        ["asked"] = JsonNumbers.Round(kit.Open(heldOut, data.Ask).AsDoubles().Average()),
                        ["likelihood"] = JsonNumbers.Round(Math.Exp(-(nll.Average() - baseNll.Average()))),
                    });
                }
            }
        }
        return points;
    }
}
