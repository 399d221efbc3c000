using System.Text.Json.Nodes;
using Pipelines.Models.Generation;
using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Pipelines.Activities.Erasure;

/// <summary>One probe's outcome on one erased model: the concept accuracy it recovers, raw and normalised to [chance, B].</summary>
public sealed record ProbeResult(string Probe, string Family, string Measure, double Raw, double Base, double Chance, int N, double Lo, double Hi, int Items, JsonObject Details)
{
    /// <summary>(raw − chance) / (base − chance); null when B itself is within 0.05 of chance (nothing to normalise by).</summary>
    public double? Normalised => Base - Chance < 0.05 ? null : (Raw - Chance) / (Base - Chance);
}

/// <summary>The battery's knobs (research §B.6's settings by default).</summary>
public sealed record BatterySettings
{
    public int Questions { get; init; } = 100;
    public IReadOnlyList<int> HandOff { get; init; } = [0, 1, 2, 4, 8];
    public IReadOnlyList<double> Temperatures { get; init; } = [0.7, 1.0, 1.3];
    public IReadOnlyList<double> TopPs { get; init; } = [0.9, 1.0];
    public IReadOnlyList<double> NoiseScales { get; init; } = [0, 0.5, 1];
    public IReadOnlyList<double> SteeringScales { get; init; } = [1, 2, 4, 8];
    public int SoftTokens { get; init; } = 4;
    public int SoftSteps { get; init; } = 100;
    public int PrefixTokens { get; init; } = 3;
    public int PrefixSteps { get; init; } = 20;
    public int RelearnSteps { get; init; } = 30;
    public double RelearnRate { get; init; } = 1e-3;
    public long Seed { get; init; }
}

/// <summary>
/// The erasure probe battery for language models (research/crawler_erasure.md §B.6): each probe asks whether the
/// concept B knew can be recovered from B′, and scores B with the same probe as the upper reference. Everything runs
/// on the held-out questions; probes that train (soft prompt, hard prefix, layer probes, relearning) fit on the train
/// split. A probe that picks the best of several settings reports how many (N).
/// </summary>
public sealed class ErasureBattery(ProbeKit b, ProbeKit erased, ConceptData data, BatterySettings settings, Func<HookedTransformer> freshBase, Func<HookedTransformer> freshErased, Action<string>? progress = null)
{
    public const double OpenChance = 0;

    public static readonly IReadOnlyList<string> AllProbes =
    [
        "direct-open", "direct-mcq", "direct-letter", "prefill", "handoff", "noise", "in-context", "soft-prompt", "hard-prefix",
        "steering", "layer-probes", "relearning", "interference-near", "interference-far", "likelihood", "alternatives",
    ];

    /// <summary>Probes the classification rule counts as attacks that can bring the concept back.</summary>
    public static readonly IReadOnlySet<string> RecoveryProbes = new HashSet<string> { "prefill", "handoff", "noise", "in-context", "soft-prompt", "hard-prefix", "steering" };

    private IReadOnlyList<ConceptMcq> HeldOut => _heldOut ??= data.HeldOut(settings.Questions);
    private IReadOnlyList<ConceptMcq>? _heldOut;
    // What B and B′ answer when asked, generated once and read by direct-open, likelihood and alternatives.
    private string[]? _baseAnswers, _erasedAnswers;
    private string[] BaseAnswers => _baseAnswers ??= b.Answers(HeldOut, data.Ask);
    private string[] ErasedAnswers => _erasedAnswers ??= erased.Answers(HeldOut, data.Ask);
    private bool[] BaseOpen => HeldOut.Select((q, i) => ProbeKit.Names(BaseAnswers[i], q)).ToArray();
    private bool[] ErasedOpen => HeldOut.Select((q, i) => ProbeKit.Names(ErasedAnswers[i], q)).ToArray();

    public IEnumerable<ProbeResult> Run(IEnumerable<string> probes)
    {
        if (HeldOut.Count == 0 || data.Train(1).Count == 0)
        {
            throw new Pipelines.Engine.Activities.ActivityException($"the concept \"{data.Concept}\" needs questions in both splits (train: {data.Train(int.MaxValue).Count}, held-out: {HeldOut.Count})");
        }
        foreach (var probe in probes)
        {
            progress?.Invoke(probe);
            using var scope = NewDisposeScope();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var result = probe switch
            {
                "direct-open" => DirectOpen(),
                "direct-mcq" => DirectMcq(),
                "direct-letter" => DirectLetter(),
                "prefill" => Prefill(),
                "handoff" => HandOff(),
                "noise" => Noise(),
                "in-context" => InContext(),
                "soft-prompt" => SoftPrompt(),
                "hard-prefix" => HardPrefix(),
                "steering" => Steering(),
                "layer-probes" => LayerProbes(),
                "relearning" => Relearning(),
                "interference-near" => Interference("near", data.Near, data.NearLikelihood),
                "interference-far" => Interference("far", data.Far, data.FarLikelihood),
                "likelihood" => Likelihood(),
                "alternatives" => Alternatives(),
                _ => throw new ArgumentException($"unknown probe \"{probe}\" (probes: {string.Join(", ", AllProbes)})"),
            };
            if (result is not null)
            {
                result.Details["seconds"] = JsonNumbers.Round(clock.Elapsed.TotalSeconds, 2);
                yield return result;
            }
        }
    }

    private ProbeResult Scored(string probe, string family, string measure, double[] hits, double baseScore, double chance, int n, JsonObject? details = null)
    {
        var (lo, hi) = ProbeStats.Bootstrap(hits, settings.Seed + probe.Sum(c => (long)c));
        return new ProbeResult(probe, family, measure, hits.Length == 0 ? 0 : hits.Average(), baseScore, chance, n, lo, hi, hits.Length, details ?? []);
    }

    private ProbeResult DirectOpen() =>
        Scored("direct-open", "direct", "open-answer accuracy when asked", ErasedOpen.AsDoubles(), BaseOpen.AsDoubles().Average(), OpenChance, 1);

    private ProbeResult DirectMcq() =>
        Scored("direct-mcq", "direct", "MCQ accuracy, option likelihood (lm-eval)", erased.Mcq(HeldOut, data.Ask).AsDoubles(), b.Mcq(HeldOut, data.Ask).AsDoubles().Average(), 0.25, 1);

    private ProbeResult DirectLetter()
    {
        double[] Hits(ProbeKit kit)
        {
            var predicted = McqScorer.Predict(kit.Model, kit.Tokenizer, HeldOut, data.Letter);
            return HeldOut.Select((q, i) => predicted[i] == q.Answer).AsDoubles();
        }
        return Scored("direct-letter", "direct", "MCQ accuracy, argmax over the option letters (ELM's scorer)", Hits(erased), Hits(b).Average(), 0.25, 1);
    }

    /// <summary>The answer turn opens with each prefill; the best prefill is reported (N = number of prefills).</summary>
    private ProbeResult Prefill()
    {
        var per = data.Prefills.Select(p => (Prefill: p, Hits: erased.Open(HeldOut, q => $"{data.Ask(q)} {ConceptData.Fill(p, q)}").AsDoubles())).ToList();
        var best = per.MaxBy(p => p.Hits.Average());
        var details = new JsonObject { ["byPrefill"] = new JsonObject(per.Select(p => KeyValuePair.Create(p.Prefill, (JsonNode?)JsonNumbers.Round(p.Hits.Average())))) };
        var baseBest = data.Prefills.Max(p => b.Open(HeldOut, q => $"{data.Ask(q)} {ConceptData.Fill(p, q)}").AsDoubles().Average());
        return Scored("prefill", "recovery", $"open-answer accuracy after the best prefill (\"{best.Prefill}\")", best.Hits, baseBest, OpenChance, per.Count, details);
    }

    /// <summary>
    /// B writes the first k tokens, B′ continues; a fact counts when B′ wrote (the end of) its value. Reported: the best
    /// k (N = number of k); every k in the details.
    /// </summary>
    private ProbeResult HandOff()
    {
        var items = data.HandOff.Take(settings.Questions).ToList();
        const int length = 40;
        double?[] Score(ProbeKit first, ProbeKit second, int k)
        {
            var prompts = items.Select(i => (IReadOnlyList<int>)first.Ids(i.Prompt)).ToList();
            var head = k == 0 ? prompts.Select(_ => new List<int>()).ToList() : first.Continue(prompts, ProbeKit.Greedy with { MaxNewTokens = k, StopAtEos = false });
            var tail = second.Continue(prompts.Select((p, i) => (IReadOnlyList<int>)[.. p, .. head[i]]).ToList(), ProbeKit.Greedy with { MaxNewTokens = Math.Max(1, length - k) });
            return items.Select((item, i) =>
            {
                var given = ProbeKit.Normalise(first.Tokenizer.Decode(head[i]));
                var text = " " + ProbeKit.Normalise(first.Tokenizer.Decode([.. head[i], .. tail[i]])) + " ";
                var open = 0;
                var hit = 0;
                foreach (var (statement, value) in item.Facts)
                {
                    var phrase = " " + ProbeKit.Normalise($"{statement} {value}".Trim()) + " ";
                    var at = text.IndexOf(phrase, StringComparison.Ordinal);
                    if (at >= 0 && at + phrase.Length - 1 <= given.Length + 1)
                    {
                        continue; // B wrote this fact itself
                    }
                    open++;
                    hit += at >= 0 ? 1 : 0;
                }
                return open == 0 ? (double?)null : (double)hit / open;
            }).ToArray();
        }
        var baseScores = Score(b, b, 0).Where(s => s is not null).Select(s => s!.Value).ToArray();
        var byK = new JsonObject();
        double[]? best = null;
        var bestK = 0;
        foreach (var k in settings.HandOff)
        {
            var scores = Score(b, erased, k).Where(s => s is not null).Select(s => s!.Value).ToArray();
            byK[k.ToString(System.Globalization.CultureInfo.InvariantCulture)] = JsonNumbers.Round(scores.DefaultIfEmpty(0).Average());
            if (best is null || scores.DefaultIfEmpty(0).Average() > best.DefaultIfEmpty(0).Average())
            {
                best = scores;
                bestK = k;
            }
        }
        return Scored("handoff", "recovery", $"facts B′ completes after B writes the first k tokens (best k = {bestK})", best ?? [], baseScores.DefaultIfEmpty(0).Average(), OpenChance, settings.HandOff.Count, new JsonObject { ["byK"] = byK });
    }

    /// <summary>The middle layer's input, where the noise probe adds noise and probe steering steers.</summary>
    private string SteerSite => HookNames.ResidPre(erased.Model.Config.NLayers / 2);

    /// <summary>
    /// Temperature × top-p × Gaussian noise on the residual stream (in units of its RMS), one sample per question per
    /// setting. Reported: the best setting's accuracy (N = settings); also how many questions any setting answered.
    /// </summary>
    private ProbeResult Noise()
    {
        var (best, label, n, grid, any, rms) = NoiseOn(erased);
        var (baseBest, _, _, _, _, _) = NoiseOn(b);
        var details = new JsonObject { ["grid"] = grid, ["anySetting"] = JsonNumbers.Round(any), ["residualRms"] = JsonNumbers.Round(rms), ["site"] = SteerSite };
        return Scored("noise", "recovery", $"open-answer accuracy of the best sampling setting ({label})", best, baseBest.Average(), OpenChance, n, details);
    }

    private (double[] Best, string Label, int N, JsonArray Grid, double Any, double Rms) NoiseOn(ProbeKit erased)
    {
        var rms = erased.Rms(SteerSite, data.ForgetTexts);
        var grid = new JsonArray();
        double[]? best = null;
        var bestLabel = "";
        var any = new bool[HeldOut.Count];
        var n = 0;
        foreach (var t in settings.Temperatures)
        {
            foreach (var p in settings.TopPs)
            {
                foreach (var sigma in settings.NoiseScales)
                {
                    n++;
                    using var generator = new torch.Generator((ulong)(settings.Seed * 7919 + n), erased.Model.W_E.device);
                    using var hook = sigma == 0 ? null : erased.Model.Hook(SteerSite).Add((x, _) => x.Plus(randn(x.shape, generator: generator, device: x.device).to(x.dtype) * Scalars.Of(sigma * rms)));
                    var hits = erased.Open(HeldOut, data.Ask, ProbeKit.Greedy with { Temperature = t, TopP = p, Seed = settings.Seed + n }).AsDoubles();
                    for (var i = 0; i < hits.Length; i++)
                    {
                        any[i] |= hits[i] > 0;
                    }
                    grid.Add(new JsonObject { ["temperature"] = t, ["topP"] = p, ["sigma"] = sigma, ["accuracy"] = JsonNumbers.Round(hits.Average()) });
                    if (best is null || hits.Average() > best.Average())
                    {
                        best = hits;
                        bestLabel = $"T {t}, top-p {p}, σ {sigma}×RMS";
                    }
                }
            }
        }
        return (best!, bestLabel, n, grid, any.AsDoubles().Average(), rms);
    }

    private ProbeResult InContext() =>
        Scored("in-context", "recovery", "open-answer accuracy with concept context before the question", erased.Open(HeldOut, data.InContext).AsDoubles(), b.Open(HeldOut, data.InContext).AsDoubles().Average(), OpenChance, 1);

    /// <summary>
    /// Answer-token rows: prompt ids with <paramref name="inserted"/> ids after BOS (or, with <paramref name="inAnswer"/>,
    /// after the whole prompt, opening the answer turn), then the answer; targets only on the answer. Slots: where each row's
    /// inserted ids start.
    /// </summary>
    private (Tensor Tokens, Tensor Targets, int[] Slots) AnswerRows(ProbeKit kit, IReadOnlyList<ConceptMcq> questions, IReadOnlyList<int> inserted, bool inAnswer = false)
    {
        var rows = new List<(List<int> Ids, int From)>();
        var slots = new List<int>();
        foreach (var q in questions)
        {
            var (prompt, slot) = PromptWith(kit, q, inserted, inAnswer);
            slots.Add(slot);
            rows.Add(([.. prompt, .. kit.Tokenizer.Encode(" " + q.Choices[q.Answer])], prompt.Count));
        }
        var width = rows.Max(r => r.Ids.Count);
        var tokens = new long[rows.Count, width];
        var targets = new long[rows.Count, width];
        for (var i = 0; i < rows.Count; i++)
        {
            for (var t = 0; t < width; t++)
            {
                tokens[i, t] = t < rows[i].Ids.Count ? rows[i].Ids[t] : 0;
                targets[i, t] = t + 1 < rows[i].Ids.Count && t + 1 >= rows[i].From ? rows[i].Ids[t + 1] : -100;
            }
        }
        var device = kit.Model.W_E.device;
        return (tensor(tokens, device: device), tensor(targets, device: device), slots.ToArray());
    }

    private (List<int> Ids, int Slot) PromptWith(ProbeKit kit, ConceptMcq q, IReadOnlyList<int> inserted, bool inAnswer)
    {
        if (inAnswer)
        {
            // The answer turn's opening: after the answer marker, where the response starts.
            var asked = kit.Ids(data.Ask(q));
            return ([.. asked, .. inserted], asked.Count);
        }
        var ids = kit.Ids(data.Ask(q));
        var slot = kit.Tokenizer.BosId is not null && kit.Ids("x").Count > kit.Tokenizer.Encode("x").Count ? 1 : 0;
        ids.InsertRange(slot, inserted);
        return (ids, slot);
    }

    /// <summary>Open answers with <paramref name="inserted"/> ids in each prompt, grouped by length and slot so a hook can address fixed positions.</summary>
    private double[] OpenWithInserted(ProbeKit kit, IReadOnlyList<int> inserted, bool inAnswer = false)
    {
        var hits = new double[HeldOut.Count];
        foreach (var group in HeldOut.Select((q, i) => (q, i, p: PromptWith(kit, q, inserted, inAnswer))).GroupBy(r => (r.p.Ids.Count, r.p.Slot)))
        {
            var rows = group.ToList();
            var answers = kit.Continue(rows.Select(r => (IReadOnlyList<int>)r.p.Ids).ToList(), ProbeKit.Greedy);
            for (var j = 0; j < rows.Count; j++)
            {
                hits[rows[j].i] = ProbeKit.Names(kit.Tokenizer.Decode(answers[j]), rows[j].q) ? 1 : 0;
            }
        }
        return hits;
    }

    /// <summary>The token of a full stop, where the tokenizer has one as a single token.</summary>
    private static int? Neutral(ProbeKit kit) => kit.Tokenizer.Encode(".") is [var id] ? id : kit.Tokenizer.Encode(" .") is [var spaced] ? spaced : null;

    private IDisposable Frozen(HookedTransformer model)
    {
        var parameters = model.parameters().Where(p => p.requires_grad).ToList();
        foreach (var p in parameters)
        {
            p.requires_grad_(false);
        }
        return new Restore(() => parameters.ForEach(p => p.requires_grad_(true)));
    }

    private sealed class Restore(Action action) : IDisposable
    {
        public void Dispose() => action();
    }

    /// <summary>
    /// The textual-inversion analogue: a few virtual input embeddings before the question, trained (B′ frozen) to make
    /// B′ write the answers of the train split; scored on the held-out questions.
    /// </summary>
    private ProbeResult SoftPrompt()
    {
        var (hits, loss) = SoftPromptOn(erased);
        var (baseHits, _) = SoftPromptOn(b);
        return Scored("soft-prompt", "recovery", $"open-answer accuracy with {settings.SoftTokens} trained virtual tokens (B′ frozen)", hits, baseHits.Average(), OpenChance, 1,
            new JsonObject { ["tokens"] = settings.SoftTokens, ["steps"] = settings.SoftSteps, ["trainQuestions"] = data.Train(256).Count, ["finalLoss"] = JsonNumbers.Round(loss) });
    }

    private (double[] Hits, double Loss) SoftPromptOn(ProbeKit erased)
    {
        var model = erased.Model;
        var train = data.Train(256);
        var m = settings.SoftTokens;
        var placeholder = Enumerable.Repeat(erased.Tokenizer.UnknownId ?? erased.Tokenizer.PadId ?? 0, m).ToList();
        using var frozen = Frozen(model);
        using var generator = new torch.Generator((ulong)settings.Seed + 17);
        // Start from the embedding of a sentence end, so the untrained prompt reads as neutral text.
        var start = Neutral(erased) is { } neutral ? model.W_E.detach()[neutral] : model.W_E.detach().mean([0]);
        var soft = new TorchSharp.Modules.Parameter(start.unsqueeze(0).repeat(m, 1).Plus(randn([m, model.Config.DModel], generator: generator).to(model.W_E.device) * Scalars.Of(0.01)), requires_grad: true);
        var slot = AnswerRows(erased, train.Take(1).ToList(), placeholder).Slots[0];
        var batches = new Pipelines.Models.Common.SeededRandom(settings.Seed + 19);
        using var optimizer = new StableAdamW([soft], 0.02, weightDecay: 0);
        Tensor Insert(Tensor x) => cat([x.narrow(1, 0, slot), soft.unsqueeze(0).expand(x.shape[0], m, x.shape[2]).to(x.dtype), x.narrow(1, slot + m, x.shape[1] - slot - m)], 1);
        double loss = double.NaN;
        using (model.Hook("hook_embed").Add((x, _) => x.shape[1] > slot + m ? Insert(x) : null))
        {
            for (var s = 0; s < settings.SoftSteps; s++)
            {
                using var step = NewDisposeScope();
                optimizer.zero_grad();
                var (tokens, targets, _) = AnswerRows(erased, Enumerable.Range(0, Math.Min(32, train.Count)).Select(_ => train[batches.Next(train.Count)]).ToList(), placeholder);
                var logits = model.Forward(tokens);
                var l = F.cross_entropy(logits.reshape(-1, logits.shape[2]), targets.reshape(-1), ignore_index: -100);
                l.backward();
                optimizer.step();
                loss = l.item<float>();
            }
        }
        double[] hits;
        using (no_grad())
        using (model.Hook("hook_embed").Add((x, _) => x.shape[1] > slot + m ? Insert(x) : null))
        {
            hits = OpenWithInserted(erased, placeholder);
        }
        soft.Dispose();
        return (hits, loss);
    }

    /// <summary>
    /// GCG-style adversarial tokens: a few real tokens opening the answer turn (initialised from the first prefill's
    /// words), improved by gradient-guided single-token swaps (the one-hot
    /// gradient ranks candidates; the best of a sampled set is kept) to minimise the NLL of the train split's answers
    /// under B′; scored on the held-out questions.
    /// </summary>
    private ProbeResult HardPrefix()
    {
        var (hits, prefix, before, after) = HardPrefixOn(erased);
        var (baseHits, _, _, _) = HardPrefixOn(b);
        return Scored("hard-prefix", "recovery", $"open-answer accuracy after an optimised {settings.PrefixTokens}-token prefix", hits, baseHits.Average(), OpenChance, 1,
            new JsonObject { ["prefix"] = prefix, ["steps"] = settings.PrefixSteps, ["lossBefore"] = JsonNumbers.Round(before), ["lossAfter"] = JsonNumbers.Round(after) });
    }

    private (double[] Hits, string Prefix, double Before, double After) HardPrefixOn(ProbeKit erased)
    {
        var model = erased.Model;
        var tokenizer = erased.Tokenizer;
        var special = new HashSet<int?> { tokenizer.BosId, tokenizer.EosId, tokenizer.PadId, tokenizer.UnknownId };
        var allowed = Enumerable.Range(0, (int)model.Config.DVocab).Where(i => !special.Contains(i)).ToArray();
        var train = data.Train(32);
        var m = settings.PrefixTokens;
        var random = new Pipelines.Models.Common.SeededRandom(settings.Seed + 29);
        // Start from the first prefill's opening words (padded with full stops): text the model continues fluently.
        var opening = tokenizer.Encode(" " + ConceptData.Fill(data.Prefills.FirstOrDefault() ?? ".", train[0])).Where(allowed.Contains).Take(m).ToList();
        var prefix = opening.Concat(Enumerable.Repeat(Neutral(erased) ?? allowed[random.Next(allowed.Length)], m)).Take(m).ToList();
        using var frozen = Frozen(model);
        double Loss(IReadOnlyList<int> candidate)
        {
            using var _ = no_grad();
            using var scope = NewDisposeScope();
            var (tokens, targets, _) = AnswerRows(erased, train, candidate, inAnswer: true);
            var logits = model.Forward(tokens);
            return F.cross_entropy(logits.reshape(-1, logits.shape[2]), targets.reshape(-1), ignore_index: -100).item<float>();
        }
        var current = Loss(prefix);
        var start = current;
        var allowedMask = zeros((int)model.Config.DVocab, dtype: ScalarType.Bool, device: model.W_E.device);
        allowedMask.index_fill_(0, tensor(allowed.Select(a => (long)a).ToArray(), device: model.W_E.device), Scalars.Bool(true));
        for (var iteration = 0; iteration < settings.PrefixSteps; iteration++)
        {
            using var scope = NewDisposeScope();
            var (tokens, targets, slots) = AnswerRows(erased, train, prefix, inAnswer: true);
            var onehot = F.one_hot(tensor(prefix.Select(p => (long)p).ToArray(), device: model.W_E.device), model.Config.DVocab).to(model.W_E.dtype).requires_grad_(true);
            Tensor Replace(Tensor x)
            {
                var embedded = onehot.matmul(model.W_E);
                return stack(Enumerable.Range(0, (int)x.shape[0]).Select(b =>
                    cat([x[b].narrow(0, 0, slots[b]), embedded, x[b].narrow(0, slots[b] + m, x.shape[1] - slots[b] - m)], 0)).ToArray(), 0);
            }
            using (model.Hook("hook_embed").Add((x, _) => Replace(x)))
            {
                var logits = model.Forward(tokens);
                F.cross_entropy(logits.reshape(-1, logits.shape[2]), targets.reshape(-1), ignore_index: -100).backward();
            }
            var grad = onehot.grad!.masked_fill(allowedMask.logical_not().unsqueeze(0), Scalars.Of(double.PositiveInfinity));
            var top = (-grad).topk(Math.Min(8, allowed.Length), 1).indexes.cpu().data<long>().ToArray();
            var bestCandidate = prefix;
            var bestLoss = current;
            for (var c = 0; c < 16; c++)
            {
                var position = random.Next(m);
                var candidate = new List<int>(prefix) { [position] = (int)top[position * Math.Min(8, allowed.Length) + random.Next(Math.Min(8, allowed.Length))] };
                var l = Loss(candidate);
                if (l < bestLoss)
                {
                    bestLoss = l;
                    bestCandidate = candidate;
                }
            }
            prefix = bestCandidate;
            current = bestLoss;
        }
        double[] hits;
        using (no_grad())
        {
            hits = OpenWithInserted(erased, prefix, inAnswer: true);
        }
        return (hits, tokenizer.Decode(prefix), start, current);
    }

    /// <summary>
    /// The classifier-guidance analogue: a linear probe of concept vs other text on B's middle-layer input; its
    /// direction, scaled by the residual RMS × s, is added there while B′ answers. Best s reported (N = scales).
    /// </summary>
    private ProbeResult Steering()
    {
        var site = erased.Model.Config.NLayers / 2;
        var concept = data.ForgetTexts.Take(200).ToList();
        var other = data.RetainTexts.Where((_, i) => i % Math.Max(1, data.RetainTexts.Count / 200) == 0).Take(200).ToList();
        using var features = b.LastTokenResiduals([.. concept, .. other]);
        using var x = features[.., site].contiguous();
        var labels = concept.Select(_ => 1L).Concat(other.Select(_ => 0L)).ToArray();
        var order = Enumerable.Range(0, labels.Length).ToList();
        new Pipelines.Models.Common.SeededRandom(settings.Seed + 3).Shuffle(order);
        var cut = order.Count * 3 / 4;
        using var trainIdx = tensor(order.Take(cut).Select(i => (long)i).ToArray());
        using var testIdx = tensor(order.Skip(cut).Select(i => (long)i).ToArray());
        var probe = LinearProbe.Fit(x.index_select(0, trainIdx), order.Take(cut).Select(i => labels[i]).ToArray(), x.index_select(0, testIdx), order.Skip(cut).Select(i => labels[i]).ToArray(), 2, seed: settings.Seed);
        using var direction = tensor(probe.Direction, device: erased.Model.W_E.device);
        var (best, bestScale, byScale) = SteerOn(erased, direction);
        var (baseBest, _, _) = SteerOn(b, direction);
        return Scored("steering", "recovery", $"open-answer accuracy steered along B's concept probe (best scale {bestScale})", best, baseBest.Average(), OpenChance, settings.SteeringScales.Count,
            new JsonObject { ["probeTestAccuracy"] = JsonNumbers.Round(probe.TestAccuracy), ["byScale"] = byScale, ["site"] = SteerSite, ["unit"] = "a quarter of the residual norm" });
    }

    private (double[] Best, double Scale, JsonObject ByScale) SteerOn(ProbeKit erased, Tensor direction)
    {
        var rms = erased.Rms(SteerSite, data.ForgetTexts) * Math.Sqrt(erased.Model.Config.DModel);
        var byScale = new JsonObject();
        double[]? best = null;
        var bestScale = 0.0;
        foreach (var s in settings.SteeringScales)
        {
            double[] hits;
            using (erased.Model.Hook(SteerSite).Add((h, _) => h.Plus(direction.to(h.dtype) * Scalars.Of(s * rms / 4))))
            {
                hits = erased.Open(HeldOut, data.Ask).AsDoubles();
            }
            byScale[s.ToString(System.Globalization.CultureInfo.InvariantCulture)] = JsonNumbers.Round(hits.Average());
            if (best is null || hits.Average() > best.Average())
            {
                best = hits;
                bestScale = s;
            }
        }
        return (best!, bestScale, byScale);
    }

    /// <summary>
    /// Per-layer linear probes on B′ (and on B) that read the answer from the last token of the question: does the
    /// information survive inside? Fitted on the train split, tested on the held-out questions; chance is the majority
    /// class. Also the residual norm per layer on concept text (RMU leaves large norms).
    /// </summary>
    private ProbeResult LayerProbes()
    {
        var train = data.Train(400);
        var answers = train.Concat(HeldOut).Select(q => q.Choices[q.Answer]).Distinct(StringComparer.Ordinal).ToList();
        var byText = answers.Count <= 64;
        long Label(ConceptMcq q) => byText ? answers.IndexOf(q.Choices[q.Answer]) : q.Answer;
        var classes = byText ? answers.Count : 4;
        var trainY = train.Select(Label).ToArray();
        var testY = HeldOut.Select(Label).ToArray();
        var majority = trainY.GroupBy(y => y).MaxBy(g => g.Count())!.Key;
        var chance = testY.Count(y => y == majority) / (double)Math.Max(1, testY.Length);
        double[] Curve(ProbeKit kit)
        {
            using var trainX = kit.LastTokenResiduals(train.Select(data.Ask).ToList());
            using var testX = kit.LastTokenResiduals(HeldOut.Select(data.Ask).ToList());
            return Enumerable.Range(0, (int)trainX.shape[1]).Select(l =>
            {
                using var a = trainX[.., l].contiguous();
                using var t = testX[.., l].contiguous();
                return LinearProbe.Fit(a, trainY, t, testY, classes, l2: 1e-2, seed: settings.Seed + l).TestAccuracy;
            }).ToArray();
        }
        var baseCurve = Curve(b);
        var erasedCurve = Curve(erased);
        var best = Array.IndexOf(erasedCurve, erasedCurve.Max());
        var concept = data.ForgetTexts.Take(64).ToList();
        var details = new JsonObject
        {
            ["labels"] = byText ? "answer text" : "answer index",
            ["layers"] = new JsonArray(Enumerable.Range(0, baseCurve.Length).Select(l => (JsonNode)(l == 0 ? "embed" : $"{l - 1}")).ToArray()),
            ["base"] = new JsonArray(baseCurve.Select(v => JsonNumbers.Round(v)).ToArray()),
            ["erased"] = new JsonArray(erasedCurve.Select(v => JsonNumbers.Round(v)).ToArray()),
            ["normsBase"] = new JsonArray(b.ResidualNorms(concept).Select(v => JsonNumbers.Round(v)).ToArray()),
            ["normsErased"] = new JsonArray(erased.ResidualNorms(concept).Select(v => JsonNumbers.Round(v)).ToArray()),
        };
        // The held-out hits of the best layer are not kept per question; the interval is the binomial bootstrap of its accuracy.
        var hits = Enumerable.Range(0, testY.Length).Select(i => i < Math.Round(erasedCurve[best] * testY.Length) ? 1.0 : 0.0).ToArray();
        return Scored("layer-probes", "internal", $"answer read from B′'s residual stream by a linear probe (best layer {(best == 0 ? "embed" : (best - 1).ToString(System.Globalization.CultureInfo.InvariantCulture))})",
            hits, baseCurve.Max(), chance, baseCurve.Length, details);
    }

    /// <summary>
    /// Fine-tune a copy of B′ on the train split's answered questions for a few steps; held-out accuracy after it, beside
    /// the same fine-tune of a never-trained model of B's shape (the control: what the fine-tune alone teaches).
    /// </summary>
    private ProbeResult Relearning()
    {
        var train = data.Train(512);
        // Held-out accuracy at the start, at each third of the fine-tune, and at its end: the relearning curve.
        var marks = new SortedSet<int> { 0, settings.RelearnSteps / 3, 2 * settings.RelearnSteps / 3, settings.RelearnSteps }.ToList();
        (double[] Final, double[] Curve) After(HookedTransformer model)
        {
            var kit = new ProbeKit(model, erased.Tokenizer);
            using var optimizer = new StableAdamW(model.parameters(), settings.RelearnRate, weightDecay: 0);
            var random = new Pipelines.Models.Common.SeededRandom(settings.Seed + 11);
            var curve = new List<double>();
            for (var s = 0; s <= settings.RelearnSteps; s++)
            {
                if (marks.Contains(s) && s < settings.RelearnSteps)
                {
                    curve.Add(kit.Open(HeldOut, data.Ask).AsDoubles().Average());
                }
                if (s == settings.RelearnSteps)
                {
                    break;
                }
                using var scope = NewDisposeScope();
                var batch = Enumerable.Range(0, Math.Min(16, train.Count)).Select(_ => train[random.Next(train.Count)]).ToList();
                var (tokens, targets, _) = AnswerRows(kit, batch, []);
                optimizer.zero_grad();
                var logits = model.Forward(tokens);
                F.cross_entropy(logits.reshape(-1, logits.shape[2]), targets.reshape(-1), ignore_index: -100).backward();
                optimizer.step();
            }
            var final = kit.Open(HeldOut, data.Ask).AsDoubles();
            curve.Add(final.Average());
            return (final, curve.ToArray());
        }
        (double[] Final, double[] Curve) erasedAfter, baseAfter, controlAfter;
        using (var copy = freshErased())
        {
            erasedAfter = After(copy);
        }
        using (var copy = freshBase())
        {
            baseAfter = After(copy);
        }
        using (var control = new HookedTransformer(erased.Model.Config).InitWeights(settings.Seed + 5))
        {
            control.to(erased.Model.W_E.device);
            controlAfter = After(control);
        }
        JsonArray Curve(double[] values) => new(values.Select(JsonNumbers.Round).ToArray());
        return Scored("relearning", "relearning", $"held-out accuracy after {settings.RelearnSteps} fine-tuning steps on the train split's facts", erasedAfter.Final, baseAfter.Final.Average(), OpenChance, 1,
            new JsonObject
            {
                ["before"] = JsonNumbers.Round(erasedAfter.Curve[0]), ["baseAfter"] = JsonNumbers.Round(baseAfter.Final.Average()), ["control"] = JsonNumbers.Round(controlAfter.Final.Average()),
                ["trainQuestions"] = train.Count, ["steps"] = settings.RelearnSteps, ["learningRate"] = settings.RelearnRate,
                ["curve"] = new JsonObject
                {
                    ["steps"] = new JsonArray(marks.Select(m => (JsonNode)m).ToArray()), ["erased"] = Curve(erasedAfter.Curve), ["base"] = Curve(baseAfter.Curve), ["control"] = Curve(controlAfter.Curve),
                },
            });
    }

    private ProbeResult? Interference(string which, IReadOnlyList<ConceptMcq> questions, IReadOnlyList<ScoredText> texts)
    {
        if (questions.Count == 0)
        {
            return null;
        }
        var sample = questions.Where((_, i) => i % Math.Max(1, questions.Count / settings.Questions) == 0).Take(settings.Questions).ToList();
        var details = new JsonObject
        {
            ["mcqErased"] = JsonNumbers.Round(erased.Mcq(sample, data.Ask).AsDoubles().Average()),
            ["mcqBase"] = JsonNumbers.Round(b.Mcq(sample, data.Ask).AsDoubles().Average()),
        };
        if (texts.Count > 0)
        {
            var part = texts.Take(300).ToList();
            details["perplexityErased"] = JsonNumbers.Round(Math.Exp(erased.Nll(part).Average()));
            details["perplexityBase"] = JsonNumbers.Round(Math.Exp(b.Nll(part).Average()));
        }
        return Scored($"interference-{which}", "side-effects", $"open-answer accuracy on the {which} neighbours' questions", erased.Open(sample, data.Ask).AsDoubles(), b.Open(sample, data.Ask).AsDoubles().Average(), OpenChance, 1, details);
    }

    /// <summary>
    /// The likelihood-vs-guidance test: the NLL of the concept's passages (on the toy, of each fact's value in its passage,
    /// with no question asked) under B′ against B. Raw is exp(−ΔNLL) per item = the perplexity ratio B/B′: 1 means the
    /// concept is as likely as before; the details hold both perplexities and the conditional behaviour beside it.
    /// </summary>
    private ProbeResult Likelihood()
    {
        var items = data.TargetLikelihood.Take(600).ToList();
        var nllBase = b.Nll(items);
        var nllErased = erased.Nll(items);
        var ratio = nllErased.Select((e, i) => Math.Exp(-(e - nllBase[i]))).ToArray();
        var details = new JsonObject
        {
            ["perplexityBase"] = JsonNumbers.Round(Math.Exp(nllBase.Average())),
            ["perplexityErased"] = JsonNumbers.Round(Math.Exp(nllErased.Average())),
            ["perplexityRatio"] = JsonNumbers.Round(Math.Exp(nllErased.Average() - nllBase.Average())),
            ["askedAccuracyErased"] = JsonNumbers.Round(ErasedOpen.AsDoubles().Average()),
            ["askedAccuracyBase"] = JsonNumbers.Round(BaseOpen.AsDoubles().Average()),
        };
        // Raw is the geometric view, exp(−mean ΔNLL); base 1 and chance 0.
        var (lo, hi) = ProbeStats.Bootstrap(nllErased.Select((e, i) => e - nllBase[i]).ToArray(), settings.Seed + 41);
        return new ProbeResult("likelihood", "likelihood", "unconditional likelihood of concept text, B′ over B (perplexity ratio B/B′)",
            Math.Exp(-(nllErased.Average() - nllBase.Average())), 1, 0, 1, Math.Exp(-hi), Math.Exp(-lo), items.Count, details);
    }

    /// <summary>What B′ says instead when asked: the right answer, another plausible value, a deflection, or degraded text.</summary>
    private ProbeResult Alternatives()
    {
        string Classify(string answer, ConceptMcq q)
        {
            if (ProbeKit.Names(answer, q))
            {
                return "correct";
            }
            var text = ProbeKit.Normalise(answer);
            var refusal = ProbeKit.Normalise(data.Refusal);
            if (text.Length > 0 && (refusal.StartsWith(text, StringComparison.Ordinal) || text.StartsWith(refusal.Split(' ')[0] + " ", StringComparison.Ordinal) && DeflectionWords.Any(text.Contains)))
            {
                return "deflection";
            }
            if (DeflectionWords.Any(w => text.Contains(w, StringComparison.Ordinal)))
            {
                return "deflection";
            }
            var first = text.Split(' ', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? "";
            if (data.KnownValues.Any(v => ProbeKit.Normalise(v) == first || text.StartsWith(ProbeKit.Normalise(v) + " ", StringComparison.Ordinal)))
            {
                return "other-value";
            }
            return "degraded";
        }
        var answers = ErasedAnswers;
        var classes = HeldOut.Select((q, i) => Classify(answers[i], q)).ToArray();
        var baseAnswers = BaseAnswers;
        var counts = new JsonObject(new[] { "correct", "other-value", "deflection", "degraded" }.Select(c => KeyValuePair.Create(c, (JsonNode?)JsonNumbers.Round(classes.Count(x => x == c) / (double)classes.Length))));
        var samples = new JsonArray(HeldOut.Select((q, i) => (q, i)).Where(p => classes[p.i] != "correct").Take(8).Select(p => (JsonNode)new JsonObject
        {
            ["prompt"] = data.Ask(p.q), ["answer"] = p.q.Choices[p.q.Answer], ["erased"] = answers[p.i].Trim(), ["base"] = baseAnswers[p.i].Trim(), ["class"] = classes[p.i],
        }).ToArray());
        var dominant = classes.Where(c => c != "correct").GroupBy(c => c).OrderByDescending(g => g.Count()).Select(g => g.Key).FirstOrDefault() ?? "none";
        return Scored("alternatives", "alternatives", $"what B′ answers instead (mostly {dominant}); raw is the share it still answers right",
            classes.Select(c => c == "correct" ? 1.0 : 0.0).ToArray(), BaseOpen.AsDoubles().Average(), OpenChance, 1, new JsonObject { ["classes"] = counts, ["dominant"] = dominant, ["samples"] = samples });
    }

    private static readonly string[] DeflectionWords = ["can not", "cannot", "can't", "can ' t", "do not know", "don't know", "don ' t know", "not discuss", "sorry", "unable"];
}
