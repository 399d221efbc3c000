using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>
/// Edge scores [n_forward, n_backward] (float32; zero off the real edges) with the sign convention of research §2.1:
/// positive means corrupting the edge raises the loss ℒ (= −metric), i.e. the edge supports the task.
/// </summary>
/// <remarks>
/// EAP, EAP-IG-inputs and clean-corrupted run on the fused forward (<see cref="FusedAttribution"/>) when the model
/// allows it (no GQA) and <paramref name="fused"/> is on; the split-input path is the reference it is tested against.
/// </remarks>
public sealed class EdgeAttribution(HookedTransformer model, ComputationGraph graph, bool fused = true)
{
    private static readonly ForwardOptions Split = new() { UseAttnResult = true, SplitQkvInput = true };

    /// <summary>
    /// EAP (Syed et al.): s(u→v) = (1/N) Σ_n Σ_p Σ_i Δ_u · ∂ℒ_n/∂I_v, with Δ_u = z_u(corrupted) − z_u(clean) and the
    /// gradient at the clean input. <paramref name="loss"/> maps logits to the mean loss over the batch.
    /// </summary>
    public Tensor Eap(Tensor clean, Tensor corrupted, Func<Tensor, Tensor> loss, Tensor? attentionMask = null) =>
        Integrated(clean, corrupted, loss, [1.0], attentionMask);

    /// <summary>
    /// EAP-IG-inputs (Hanna et al. 2024): the gradient at each destination averaged over m runs whose token
    /// embeddings are interpolated, e' + α(e − e'). We use the paper's α ∈ {1/m, 2/m, …, 1}, which includes the clean
    /// endpoint (so m = 1 is EAP); EAP-IG's current code uses {0, …, (m−1)/m}. Default m = 5, as MIB.
    /// </summary>
    public Tensor EapIgInputs(Tensor clean, Tensor corrupted, Func<Tensor, Tensor> loss, int steps = 5, Tensor? attentionMask = null) =>
        Integrated(clean, corrupted, loss, Enumerable.Range(1, steps).Select(k => (double)k / steps).ToArray(), attentionMask);

    /// <summary>
    /// EAP-IG-activations (research §2.4, after Marks et al.): for each node group g (input, attention layer l with all
    /// its heads, MLP l) and α ∈ {1/m, …, 1}, run the clean input with g's output moved to α·z(clean) + (1−α)·z(corrupted)
    /// and everything downstream recomputed; the destination gradients are averaged over all (2L+1)·m runs, as
    /// EAP-IG's code does. Deliberate difference: we *shift* the live output by (1−α)(z(corrupted) − z(clean)) instead
    /// of substituting a constant, so gradients still flow into g's own inputs in g's runs (a constant would zero
    /// them and shrink those edges' scores by 2L/(2L+1)). At α = 1 a run is the clean run, so m = 1 is EAP.
    /// </summary>
    public Tensor EapIgActivations(Tensor clean, Tensor corrupted, Func<Tensor, Tensor> loss, int steps = 5, Tensor? attentionMask = null)
    {
        var run = new CircuitRun(model, graph);
        using var scope = NewDisposeScope();
        var cleanValues = run.SourceValues(clean, attentionMask);
        var corruptValues = run.SourceValues(corrupted, attentionMask);
        var groups = new List<(string Hook, TensorIndex Slots)> { ("hook_embed", TensorIndex.Single(0)) };
        for (var l = 0; l < graph.Layers; l++)
        {
            groups.Add((HookNames.Result(l), TensorIndex.Slice(graph.HeadIndex(l, 0), graph.HeadIndex(l, 0) + graph.Heads)));
            groups.Add((HookNames.MlpOut(l), TensorIndex.Single(graph.MlpIndex(l))));
        }
        var grads = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var names = DestinationHooks().ToList();
        foreach (var (hook, slots) in groups)
        {
            for (var k = 1; k <= steps; k++)
            {
                using var step = NewDisposeScope();
                var alpha = Pipelines.Models.Runtime.Scalars.Of(1 - (double)k / steps); // the shift's weight, 1 − α
                var shift = (corruptValues[.., .., slots] - cleanValues[.., .., slots]).mul(alpha);
                using var capture = new GradientCapture(model, names);
                using var move = model.Hook(hook).Add((x, _) => k == steps ? null : x.Plus(shift));
                using (enable_grad())
                {
                    loss(model.Forward(clean, attentionMask, options: Split)).backward();
                }
                foreach (var name in names)
                {
                    var g = capture.GradOrZero(name).detach().clone();
                    grads[name] = grads.TryGetValue(name, out var sum) ? sum.Plus(g).MoveToOuterDisposeScope() : g.MoveToOuterDisposeScope();
                }
                model.zero_grad();
            }
        }
        return Score(corruptValues - cleanValues, grads, groups.Count * steps).MoveToOuterDisposeScope();
    }

    /// <summary>clean-corrupted: the gradient averaged over the clean and the corrupted inputs (α ∈ {0, 1}).</summary>
    public Tensor CleanCorrupted(Tensor clean, Tensor corrupted, Func<Tensor, Tensor> loss, Tensor? attentionMask = null) =>
        Integrated(clean, corrupted, loss, [0.0, 1.0], attentionMask);

    /// <summary>
    /// EAP with any ablation: Δ_u = <paramref name="ablated"/>_u − z_u(clean) (e.g. dataset means, or zero), gradient at
    /// the clean input. EAP-IG-inputs interpolates token embeddings, so it is defined for counterfactuals only.
    /// </summary>
    public Tensor EapAblated(Tensor clean, Tensor ablated, Func<Tensor, Tensor> loss, Tensor? attentionMask = null) =>
        Integrated(clean, null, loss, [1.0], attentionMask, ablated);

    private Tensor Integrated(Tensor clean, Tensor? corrupted, Func<Tensor, Tensor> loss, double[] alphas, Tensor? attentionMask, Tensor? ablated = null)
    {
        if (fused && ablated is null && corrupted is not null && FusedAttribution.Supports(model.Config))
        {
            return new FusedAttribution(model, graph).Integrated(clean, corrupted, loss, alphas, attentionMask);
        }
        var run = new CircuitRun(model, graph);
        using var scope = NewDisposeScope();
        var cleanValues = run.SourceValues(clean, attentionMask);
        var corruptValues = ablated ?? run.SourceValues(corrupted!, attentionMask);
        var delta = corruptValues - cleanValues;
        var embedClean = cleanValues[.., .., 0];
        var embedCorrupt = corruptValues[.., .., 0];
        var grads = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var names = DestinationHooks().ToList();
        foreach (var alpha in alphas)
        {
            using var step = NewDisposeScope();
            using var capture = new GradientCapture(model, names);
            var interpolated = embedCorrupt.Plus((embedClean - embedCorrupt).mul(Scalars.Of(alpha)));
            // A leaf that requires grad: on models without learned positions nothing else upstream of layer 0 does.
            using var embed = model.Hook("hook_embed").Add((_, _) => alpha == 1.0 ? null : interpolated.detach().requires_grad_(true));
            using (enable_grad())
            {
                var logits = model.Forward(clean, attentionMask, options: Split);
                loss(logits).backward();
            }
            foreach (var name in names)
            {
                var g = capture.GradOrZero(name).detach().clone();
                grads[name] = grads.TryGetValue(name, out var sum) ? sum.Plus(g).MoveToOuterDisposeScope() : g.MoveToOuterDisposeScope();
            }
            model.zero_grad();
        }
        return Score(delta, grads, alphas.Length).MoveToOuterDisposeScope();
    }

    /// <summary>S[f, b] = Σ Δ_f · (Σ grads_b / runs) for every destination group.</summary>
    private Tensor Score(Tensor delta, Dictionary<string, Tensor> grads, int runs)
    {
        var count = Pipelines.Models.Runtime.Scalars.Of(runs);
        var scores = zeros(graph.NForward, graph.NBackward, dtype: Norm.Wide(delta.dtype)); // f32 accumulation (f64 models: f64)
        for (var l = 0; l < graph.Layers; l++)
        {
            foreach (var qkv in "qkv")
            {
                var first = graph.HeadInputIndex(l, 0, qkv);
                var prev = graph.PrevIndex(first);
                var grad = grads[HookNames.Input(l, qkv)].div(count); // [B,T,H,d]
                scores[..prev, first..(first + graph.Heads)] += einsum("btfd,bthd->fh", delta[.., .., ..prev], grad);
            }
            var mlp = graph.MlpInputIndex(l);
            var mlpPrev = graph.PrevIndex(mlp);
            scores[..mlpPrev, mlp] += einsum("btfd,btd->f", delta[.., .., ..mlpPrev], grads[HookNames.MlpIn(l)].div(count));
        }
        scores[.., graph.LogitsIndex] += einsum("btfd,btd->f", delta, grads[HookNames.ResidPost(graph.Layers - 1)].div(count));
        return scores;
    }

    /// <summary>
    /// Exact activation patching: for every real edge, ℒ(full graph without that edge, its parent taken from the
    /// corrupted run) − ℒ(full graph). |E| circuit runs: for small models, and to check the gradient methods.
    /// </summary>
    public Tensor Exact(Tensor clean, Tensor corrupted, Func<Tensor, Tensor> loss, Tensor? attentionMask = null, Action<double>? progress = null)
    {
        using var scope = NewDisposeScope();
        var ablated = new CircuitRun(model, graph).SourceValues(corrupted, attentionMask);
        return ExactAblated(clean, ablated, loss, attentionMask, progress).MoveToOuterDisposeScope();
    }

    /// <summary>Exact patching with any ablated source values ([B,T,n_forward,d]: means, zeros, a counterfactual run).</summary>
    public Tensor ExactAblated(Tensor clean, Tensor ablated, Func<Tensor, Tensor> loss, Tensor? attentionMask = null, Action<double>? progress = null)
    {
        var run = new CircuitRun(model, graph);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var full = run.FullCircuit();
        var baseline = loss(run.Run(clean, ablated, full, attentionMask)).to(ScalarType.Float64).item<double>();
        var scores = zeros(graph.NForward, graph.NBackward, dtype: Norm.Wide(ablated.dtype));
        var done = 0;
        var total = graph.EdgeCount;
        foreach (var (f, b) in graph.Edges())
        {
            using var inner = NewDisposeScope();
            full[f, b] = tensor(false);
            scores[f, b] = tensor(loss(run.Run(clean, ablated, full, attentionMask)).to(ScalarType.Float64).item<double>() - baseline).to(scores.dtype);
            full[f, b] = tensor(true);
            if (++done % 64 == 0)
            {
                progress?.Invoke(done / (double)total);
            }
        }
        return scores.MoveToOuterDisposeScope();
    }

    private IEnumerable<string> DestinationHooks()
    {
        for (var l = 0; l < graph.Layers; l++)
        {
            yield return HookNames.Input(l, "q");
            yield return HookNames.Input(l, "k");
            yield return HookNames.Input(l, "v");
            yield return HookNames.MlpIn(l);
        }
        yield return HookNames.ResidPost(graph.Layers - 1);
    }
}
