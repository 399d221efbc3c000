using System.Text.Json;
using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Model;
using Pipelines.Engine.Activities;
using Pipelines.Models.Adapters;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Common;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Activities.Erasure;

public enum ErasureMethod { Ga, Elm, Rmu, RefusalSft }

/// <summary>
/// Erases a concept from a model with a LoRA adapter (the base frozen): gradient ascent with a retain KL term, ELM's
/// expert/novice objective with its retain and fluency terms, RMU's random-direction push, or refusal SFT (the
/// guidance-only control). Writes the merged model, the PEFT adapter, the training curve and adapter checkpoints.
/// </summary>
[Activity("erasure.train", Version = 1, Category = "Erasure", Resources = ["gpu"], Summary = "Erase a concept from a model with a LoRA adapter: ga (gradient ascent + retain KL), elm (ELM's expert/novice objective), rmu (random-direction push) or refusal-sft (the guidance-only control)")]
[Output("model", ArtifactKinds.Model, Help = "The erased model B′: the adapter merged into B's weights", MediaType = "inode/directory", FileName = "model", IsDirectory = true)]
[Output("adapter", ArtifactKinds.Json, Help = "The LoRA adapter in PEFT's format (adapter_config.json + adapter_model.safetensors)", MediaType = "inode/directory", FileName = "adapter", IsDirectory = true)]
[Output("metrics", ArtifactKinds.Json, Help = "metrics.json: the training curve (loss terms every 10 steps)", MediaType = "application/json", FileName = "metrics.json")]
[Output("checkpoints", ArtifactKinds.Checkpoints, Help = "Adapters along training (step-NNNNNN, PEFT format) for the erasure dynamics", MediaType = "inode/directory", FileName = "checkpoints", IsDirectory = true)]
public sealed class ErasureTrainActivity : Activity<ErasureTrainActivity.Input>
{
    public sealed record Input
    {
        [Input("The base model B", Kind = ArtifactKinds.Model)]
        public required Artifact Model { get; init; }

        [Input("ga (gradient ascent on the concept's text, KL to B on other text), elm (ELM: expert/novice contrast, retain and fluency terms), rmu (push a layer's activations on concept text toward a scaled random direction) or refusal-sft (answer the concept's questions with a refusal)")]
        public ErasureMethod Method { get; init; } = ErasureMethod.Elm;

        [Input("A concept world (erasure.concept-world's world)", Kind = ArtifactKinds.Json)]
        public Artifact? World { get; init; }

        [Input("The world's domain to erase")]
        public string Domain { get; init; } = "";

        [Input("Real data: the concept's MCQs (refusal-sft answers their questions with a refusal)", Kind = ArtifactKinds.Dataset)]
        public Artifact? Mcq { get; init; }

        [Input("Real data: the concept's text (JSONL with \"text\", or one document per line)", Kind = ArtifactKinds.Dataset)]
        public Artifact? Forget { get; init; }

        [Input("Real data: text to retain", Kind = ArtifactKinds.Dataset)]
        public Artifact? Retain { get; init; }

        [Input("Real data: the concept's keywords, for ELM's expert and novice contexts")]
        public string Concept { get; init; } = "";

        [Input("Real data: how a question is asked ({question} is replaced)")]
        public string Template { get; init; } = ConceptData.DefaultTemplate;

        [Input("Optimizer steps", Minimum = 1, Maximum = 1_000_000)]
        public int Steps { get; init; } = 150;

        [Input("Texts per step (forget and retain each)", Minimum = 1, Maximum = 1024)]
        public int BatchSize { get; init; } = 16;

        [Input("AdamW learning rate of the adapter", Minimum = 0)]
        public double LearningRate { get; init; } = 2e-3;

        [Input("LoRA rank", Minimum = 1, Maximum = 4096)]
        public int Rank { get; init; } = 8;

        [Input("LoRA alpha (the update is scaled by alpha / rank)", Minimum = 0)]
        public double Alpha { get; init; } = 16;

        [Input("Layers that get adapters (empty: all; rmu: up to its layer)")]
        public IReadOnlyList<int> Layers { get; init; } = [];

        [Input("Weight of the retain term", Minimum = 0)]
        public double RetainWeight { get; init; } = 1;

        [Input("elm: η, the strength of the expert/novice edit (ramped from 1 to η along each text)", Minimum = 0)]
        public double Eta { get; init; } = 8;

        [Input("elm: weight of the fluency term (next-token loss on B's ELM-guided continuations after the bridge)", Minimum = 0)]
        public double FluencyWeight { get; init; } = 1;

        [Input("rmu: the layer whose output is pushed (-1: the middle)")]
        public int RmuLayer { get; init; } = -1;

        [Input("rmu: the random target's norm (0: 4 × the layer's mean residual norm on concept text)", Minimum = 0)]
        public double RmuCoefficient { get; init; }

        [Input("Save the adapter every N steps (0: none)", Minimum = 0)]
        public int CheckpointEvery { get; init; } = 25;

        [Input("Seed for the adapter's initialisation and the batches")]
        public long Seed { get; init; }
    }

    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleForEach(i => i.Layers).GreaterThanOrEqualTo(0);
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var data = ErasureProbeActivity.Data(input.World, input.Domain, input.Mcq, input.Forget, input.Retain, null, null, input.Concept, input.Seed, input.Template);
        if (data.ForgetTexts.Count == 0 || data.RetainTexts.Count == 0)
        {
            throw new ActivityException($"inputs: the concept needs forget and retain text (forget: {data.ForgetTexts.Count} documents, retain: {data.RetainTexts.Count})");
        }
        var (model, tokenizer) = ModelArtifacts.Open(input.Model);
        using var _m = model;
        var (frozen, _) = ModelArtifacts.Open(input.Model);
        using var _f = frozen;
        var cfg = model.Config;
        if (input.Layers.FirstOrDefault(l => l >= cfg.NLayers) is var bad && input.Layers.Any(l => l >= cfg.NLayers))
        {
            throw new ActivityException($"inputs.layers: layer {bad} does not exist (the model has {cfg.NLayers})");
        }
        var rmuLayer = input.RmuLayer < 0 ? Math.Max(0, cfg.NLayers / 2 - 1) : input.RmuLayer;
        if (rmuLayer >= cfg.NLayers)
        {
            throw new ActivityException($"inputs.rmuLayer: layer {rmuLayer} does not exist (the model has {cfg.NLayers})");
        }
        IReadOnlyCollection<int>? layers = input.Layers.Count > 0 ? input.Layers.ToHashSet()
            : input.Method == ErasureMethod.Rmu ? Enumerable.Range(0, rmuLayer + 1).ToHashSet() : null;
        foreach (var p in model.parameters())
        {
            p.requires_grad_(false);
        }
        foreach (var p in frozen.parameters())
        {
            p.requires_grad_(false);
        }
        using var adapter = LoraAdapter.Create(cfg, LoraAdapter.AllSites(cfg).Select(s => s.Module).Distinct(), input.Rank, input.Alpha, layers, seed: input.Seed);
        adapter.to(model.W_E.device);
        adapter.Attach(model);
        var trainer = new ErasureObjectives(model, frozen, tokenizer, data, input, rmuLayer);
        using var optimizer = new StableAdamW(adapter.parameters(), input.LearningRate, weightDecay: 0);
        var curve = new JsonArray();
        var checkpoints = context.OutputDirectory("checkpoints");
        Directory.CreateDirectory(checkpoints);
        context.Report(0, $"{Name(input.Method)}: preparing");
        trainer.Prepare(context);
        for (var step = 1; step <= input.Steps; step++)
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            using var scope = NewDisposeScope();
            optimizer.zero_grad();
            var terms = trainer.Loss(step);
            var total = terms.Values.Aggregate((a, b) => a.Plus(b));
            total.backward();
            optimizer.step();
            if (step % 10 == 0 || step == 1 || step == input.Steps)
            {
                var point = new JsonObject { ["step"] = step, ["loss"] = JsonNumbers.Round(total.item<float>()) };
                foreach (var (name, t) in terms)
                {
                    point[name] = JsonNumbers.Round(t.item<float>());
                }
                curve.Add(point);
                context.Report((double)step / input.Steps, $"{Name(input.Method)}: step {step}, loss {total.item<float>():F4}");
            }
            if (input.CheckpointEvery > 0 && (step % input.CheckpointEvery == 0 || step == input.Steps))
            {
                adapter.Save(Path.Combine(checkpoints, $"step-{step:D6}"));
            }
        }
        adapter.Save(context.OutputDirectory("adapter"));
        adapter.Merge();
        var output = context.OutputDirectory("model");
        Directory.CreateDirectory(output);
        foreach (var file in ModelArtifacts.CheckpointFiles.Where(f => f != Checkpoint.ConfigFile && !f.Contains("safetensors", StringComparison.Ordinal)))
        {
            var from = Path.Combine(input.Model.Path, file);
            if (File.Exists(from))
            {
                File.Copy(from, Path.Combine(output, file));
            }
        }
        Checkpoint.Save(model, output, new JsonObject { ["pipelines_erasure"] = new JsonObject { ["method"] = Name(input.Method), ["concept"] = data.Concept, ["rank"] = input.Rank, ["steps"] = input.Steps } });
        var metrics = new JsonObject
        {
            ["method"] = Name(input.Method), ["concept"] = data.Concept, ["steps"] = input.Steps, ["rank"] = input.Rank, ["alpha"] = input.Alpha,
            ["layers"] = new JsonArray(adapter.Sites.Select(s => s.Layer).Distinct().Order().Select(l => (JsonNode)l).ToArray()),
            ["curve"] = curve,
        };
        File.WriteAllText(context.OutputFile("metrics"), metrics.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        context.Log($"{Name(input.Method)} on {data.Concept}: {input.Steps} steps, final {curve[^1]!.ToJsonString()}");
        return Task.CompletedTask;
    }

    public static string Name(ErasureMethod m) => JsonNamingPolicy.KebabCaseLower.ConvertName(m.ToString());
}

/// <summary>The four erasure objectives (research/crawler_erasure.md §B.5, §B.6 item 3), on batches that are a function of the step.</summary>
internal sealed class ErasureObjectives(HookedTransformer model, HookedTransformer frozen, ITextTokenizer tokenizer, ConceptData data, ErasureTrainActivity.Input input, int rmuLayer)
{
    private readonly int _nCtx = model.Config.Positional == PositionalKind.Learned ? (int)model.Config.NCtx : 1024;
    private List<(List<int> Prompt, List<int> Continuation)> _fluency = [];
    private Tensor? _rmuTarget;
    private readonly List<Tensor> _owned = [];

    private List<int> Bos() => tokenizer.BosId is { } bos ? [bos] : [];

    private IReadOnlyList<string> Sample(IReadOnlyList<string> texts, int step, int salt)
    {
        var random = new SeededRandom(input.Seed * 1_000_003 + step * 31 + salt);
        return Enumerable.Range(0, input.BatchSize).Select(_ => texts[random.Next(texts.Count)]).ToList();
    }

    /// <summary>Right-padded rows and a mask of their real positions.</summary>
    private (Tensor Tokens, Tensor Mask) Rows(IReadOnlyList<List<int>> rows)
    {
        var width = rows.Max(r => r.Count);
        var ids = new long[rows.Count, width];
        var mask = new float[rows.Count, width];
        for (var b = 0; b < rows.Count; b++)
        {
            for (var t = 0; t < rows[b].Count; t++)
            {
                ids[b, t] = rows[b][t];
                mask[b, t] = 1;
            }
        }
        var device = model.W_E.device;
        return (tensor(ids, device: device), tensor(mask, device: device));
    }

    private List<int> Clip(List<int> ids, int room) => ids.Count > room ? ids[..room] : ids;

    /// <summary>Next-token cross-entropy over the real positions of texts (mean per predicted token).</summary>
    private Tensor LmLoss(HookedTransformer m, IReadOnlyList<string> texts)
    {
        var (tokens, mask) = Rows(texts.Select(t => Clip([.. Bos(), .. tokenizer.Encode(t)], _nCtx)).ToList());
        var logits = m.Forward(tokens);
        var logp = F.log_softmax(logits.narrow(1, 0, logits.shape[1] - 1), -1);
        var nll = -logp.gather(2, tokens.narrow(1, 1, tokens.shape[1] - 1).unsqueeze(2)).squeeze(2);
        var m2 = mask.narrow(1, 1, mask.shape[1] - 1);
        return (nll * m2).sum() / m2.sum();
    }

    public void Prepare(ActivityContext context)
    {
        if (input.Method == ErasureMethod.Elm && input.FluencyWeight > 0)
        {
            _fluency = FluencyTexts(16, 16);
            context.Log($"elm: {_fluency.Count} fluency continuations, e.g. \"{tokenizer.Decode(_fluency[0].Continuation)}\"");
        }
        if (input.Method == ErasureMethod.Rmu)
        {
            using var _ = no_grad();
            var kit = new ProbeKit(frozen, tokenizer);
            var norm = kit.ResidualNorms(data.ForgetTexts.Take(64).ToList())[rmuLayer];
            var coefficient = input.RmuCoefficient > 0 ? input.RmuCoefficient : 4 * norm;
            using var generator = new torch.Generator((ulong)input.Seed + 101);
            var u = rand([model.Config.DModel], generator: generator);
            _rmuTarget = (u / u.norm() * Scalars.Of(coefficient)).to(model.W_E.device).DetachFromDisposeScope();
            context.Log($"rmu: layer {rmuLayer}, target norm {coefficient:F2} (the layer's mean residual norm on concept text is {norm:F2})");
        }
    }

    public Dictionary<string, Tensor> Loss(int step) => input.Method switch
    {
        ErasureMethod.Ga => Ga(step),
        ErasureMethod.Elm => Elm(step),
        ErasureMethod.Rmu => Rmu(step),
        ErasureMethod.RefusalSft => RefusalSft(step),
        _ => throw new ArgumentOutOfRangeException(nameof(step)),
    };

    /// <summary>KL(P_B ‖ P_B′) per token on retain text.</summary>
    private Tensor RetainKl(int step)
    {
        var (tokens, mask) = Rows(Sample(data.RetainTexts, step, 2).Select(t => Clip([.. Bos(), .. tokenizer.Encode(t)], _nCtx)).ToList());
        Tensor reference;
        using (no_grad())
        {
            reference = F.log_softmax(frozen.Forward(tokens), -1);
        }
        var current = F.log_softmax(model.Forward(tokens), -1);
        var kl = (reference.exp() * (reference - current)).sum(-1);
        return (kl * mask).sum() / mask.sum();
    }

    /// <summary>Gradient ascent on the concept's text (its NLL, capped at 10 nats so it cannot run off) plus the retain KL.</summary>
    private Dictionary<string, Tensor> Ga(int step)
    {
        var forget = LmLoss(model, Sample(data.ForgetTexts, step, 1));
        return new() { ["forget"] = -forget.clamp_max(Scalars.Of(10.0)), ["retain"] = RetainKl(step) * Scalars.Of(input.RetainWeight) };
    }

    /// <summary>
    /// ELM: soft cross-entropy to log P(x) − η_t·(log P(x | expert) − log P(x | novice)) from the frozen model (η_t ramps
    /// from 1 to η along the text, temperature 1.2, top-50 clamp); retain: cross-entropy to the frozen model's argmax on
    /// other text; fluency: next-token loss on B's ELM-guided continuations after a concept prompt and the bridge.
    /// </summary>
    private Dictionary<string, Tensor> Elm(int step)
    {
        var texts = Sample(data.ForgetTexts, step, 1).Select(t => tokenizer.Encode(t).ToList()).ToList();
        var expert = tokenizer.Encode(" " + data.ExpertFrame).ToList();
        var novice = tokenizer.Encode(" " + data.NoviceFrame).ToList();
        var room = _nCtx - Bos().Count - Math.Max(expert.Count, novice.Count);
        texts = texts.Select(t => Clip(t, room)).ToList();
        var (plain, mask) = Rows(texts.Select(t => (List<int>)[.. Bos(), .. t]).ToList());
        var length = plain.shape[1] - Bos().Count; // predictions of the text's tokens: plain positions [0, length)
        Tensor target;
        using (no_grad())
        {
            Tensor Aligned(List<int> frame)
            {
                var (framed, _) = Rows(texts.Select(t => (List<int>)[.. Bos(), .. frame, .. t]).ToList());
                return F.log_softmax(frozen.Forward(framed).narrow(1, Bos().Count + frame.Count - 1, length), -1);
            }
            var basis = F.log_softmax(frozen.Forward(plain).narrow(1, Math.Max(0, Bos().Count - 1), length), -1);
            var ramp = linspace(1.0, Math.Max(1.0, input.Eta), length, device: plain.device).to(basis.dtype).view(1, -1, 1);
            var edit = (basis - ramp * (Aligned(expert) - Aligned(novice))) / Scalars.Of(1.2);
            var k = (int)Math.Min(50, edit.shape[2]);
            var kth = edit.topk(k, -1).values.narrow(-1, k - 1, 1);
            target = edit.masked_fill(edit.lt(kth), Scalars.Of(double.NegativeInfinity)).softmax(-1);
        }
        var predicted = F.log_softmax(model.Forward(plain).narrow(1, Math.Max(0, Bos().Count - 1), length), -1);
        var positions = mask.narrow(1, Bos().Count, length);
        var erase = -(target * predicted.masked_fill(target.eq(Scalars.Of(0.0)), Scalars.Of(0.0))).sum(-1);
        var terms = new Dictionary<string, Tensor> { ["erase"] = (erase * positions).sum() / positions.sum() };
        var (retainTokens, retainMask) = Rows(Sample(data.RetainTexts, step, 2).Select(t => Clip([.. Bos(), .. tokenizer.Encode(t)], _nCtx)).ToList());
        Tensor hard;
        using (no_grad())
        {
            hard = frozen.Forward(retainTokens).argmax(-1);
        }
        var retainLogits = model.Forward(retainTokens);
        var retainCe = F.cross_entropy(retainLogits.reshape(-1, retainLogits.shape[2]), hard.reshape(-1), reduction: nn.Reduction.None).view(hard.shape);
        terms["retain"] = (retainCe * retainMask).sum() / retainMask.sum() * Scalars.Of(input.RetainWeight);
        if (_fluency.Count > 0)
        {
            var random = new SeededRandom(input.Seed + step);
            var batch = Enumerable.Range(0, Math.Min(4, _fluency.Count)).Select(_ => _fluency[random.Next(_fluency.Count)]).ToList();
            var rows = batch.Select(f => (List<int>)[.. f.Prompt, .. f.Continuation]).ToList();
            var (tokens, _) = Rows(rows);
            var targets = new long[rows.Count, tokens.shape[1]];
            for (var b = 0; b < rows.Count; b++)
            {
                for (var t = 0; t < tokens.shape[1]; t++)
                {
                    targets[b, t] = t + 1 < rows[b].Count && t + 1 >= batch[b].Prompt.Count ? rows[b][t + 1] : -100;
                }
            }
            var logits = model.Forward(tokens);
            terms["fluency"] = F.cross_entropy(logits.reshape(-1, logits.shape[2]), tensor(targets, device: tokens.device).reshape(-1), ignore_index: -100) * Scalars.Of(input.FluencyWeight);
        }
        return terms;
    }

    /// <summary>
    /// ELM's fluency data: a concept prompt (a text's first words) and the bridge, continued by the frozen model with
    /// ELM-guided decoding: logits + γ·(log P(· | novice, generated) − log P(· | expert, generated)), γ = 3, greedy.
    /// </summary>
    private List<(List<int> Prompt, List<int> Continuation)> FluencyTexts(int count, int length)
    {
        using var _ = no_grad();
        var expert = tokenizer.Encode(" " + data.ExpertFrame).ToList();
        var novice = tokenizer.Encode(" " + data.NoviceFrame).ToList();
        var bridge = tokenizer.Encode(" " + data.Bridge).ToList();
        var result = new List<(List<int>, List<int>)>();
        var random = new SeededRandom(input.Seed + 7);
        for (var i = 0; i < count; i++)
        {
            var text = tokenizer.Encode(data.ForgetTexts[random.Next(data.ForgetTexts.Count)]).Take(6).ToList();
            List<int> prompt = [.. Bos(), .. text, .. bridge];
            var generated = new List<int>();
            for (var t = 0; t < length && prompt.Count + generated.Count < _nCtx - 1 && Bos().Count + expert.Count + generated.Count < _nCtx - 1; t++)
            {
                using var scope = NewDisposeScope();
                Tensor Last(List<int> ids) => F.log_softmax(frozen.Forward(tensor(ids.Select(x => (long)x).ToArray(), device: model.W_E.device).unsqueeze(0))[0, -1], -1);
                var logits = Last([.. prompt, .. generated]).Plus(Scalars.Of(3.0) * (Last([.. Bos(), .. novice, .. generated]) - Last([.. Bos(), .. expert, .. generated])));
                var next = (int)logits.argmax().item<long>();
                if (next == tokenizer.EosId)
                {
                    break;
                }
                generated.Add(next);
            }
            if (generated.Count > 0)
            {
                result.Add((prompt, generated));
            }
        }
        return result;
    }

    /// <summary>RMU: the layer's output on concept text → c·u (a fixed random direction), on other text → B's.</summary>
    private Dictionary<string, Tensor> Rmu(int step)
    {
        foreach (var t in _owned)
        {
            t.Dispose();
        }
        _owned.Clear();
        Tensor Layer(HookedTransformer m, Tensor tokens)
        {
            // Captured with its graph (a cache would detach it); the handle outlives Forward's dispose scope.
            Tensor? captured = null;
            using (m.Hook(HookNames.ResidPost(rmuLayer)).Add((x, _) =>
            {
                captured = x.alias().DetachFromDisposeScope();
                return null;
            }))
            {
                m.Forward(tokens).Dispose();
            }
            _owned.Add(captured!);
            return captured!;
        }
        var (forget, forgetMask) = Rows(Sample(data.ForgetTexts, step, 1).Select(t => Clip([.. Bos(), .. tokenizer.Encode(t)], _nCtx)).ToList());
        var (retain, retainMask) = Rows(Sample(data.RetainTexts, step, 2).Select(t => Clip([.. Bos(), .. tokenizer.Encode(t)], _nCtx)).ToList());
        var pushed = (Layer(model, forget) - _rmuTarget!).pow(Scalars.Int(2)).mean([-1]);
        Tensor reference;
        using (no_grad())
        {
            reference = Layer(frozen, retain);
        }
        var kept = (Layer(model, retain) - reference).pow(Scalars.Int(2)).mean([-1]);
        return new()
        {
            ["forget"] = (pushed * forgetMask).sum() / forgetMask.sum(),
            ["retain"] = (kept * retainMask).sum() / retainMask.sum() * Scalars.Of(input.RetainWeight * 100),
        };
    }

    /// <summary>
    /// Refusal SFT: the concept's questions answered with the refusal, other questions with their answers; other text and
    /// the concept's passages kept by their own next-token loss.
    /// </summary>
    private Dictionary<string, Tensor> RefusalSft(int step)
    {
        var random = new SeededRandom(input.Seed * 1_000_003 + step);
        var questions = Enumerable.Range(0, input.BatchSize).Select(_ => data.Target[random.Next(data.Target.Count)]).ToList();
        var examples = questions.Select(q => new Pipelines.Models.Training.ChatExample(data.Ask(q), data.Refusal)).ToList();
        // Other questions keep their answers, so the refusal is about the concept, not about being asked.
        if (data.RetainQuestions.Count > 0)
        {
            examples.AddRange(Enumerable.Range(0, input.BatchSize).Select(_ => data.RetainQuestions[random.Next(data.RetainQuestions.Count)])
                .Select(q => new Pipelines.Models.Training.ChatExample(data.Ask(q), data.Answered(q)[data.Ask(q).Length..].Trim())));
        }
        var (tokens, targets) = Pipelines.Models.Training.ChatTrainer.Encode(tokenizer, examples, _nCtx);
        var logits = model.Forward(tokens.to(model.W_E.device));
        var refusal = F.cross_entropy(logits.reshape(-1, logits.shape[2]), targets.to(model.W_E.device).reshape(-1), ignore_index: -100);
        // Retain: other text and the concept's own passages (no questions), so only the asked behaviour changes.
        var keep = Sample(data.RetainTexts, step, 2).Take(input.BatchSize / 2).Concat(Sample(data.ForgetPassages, step, 3).Take(input.BatchSize - input.BatchSize / 2)).ToList();
        return new() { ["refusal"] = refusal, ["retain"] = LmLoss(model, keep) * Scalars.Of(input.RetainWeight) };
    }
}
