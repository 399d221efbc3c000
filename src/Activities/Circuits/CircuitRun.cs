using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>
/// Runs a circuit (research §4, MIB's evaluate_graph): in-circuit edges carry their parent's value in the circuit
/// run, out-of-circuit edges carry the parent's value from the counterfactual run. Each destination's input is
/// rebuilt from masked upstream outputs: I_v = I_v(run) + Σ_{u ∉ C(v)} (z̃_u − z_u(run)). The same mechanism with
/// every edge in gives the clean model, and with none the corrupted one.
/// </summary>
public sealed class CircuitRun(HookedTransformer model, ComputationGraph graph)
{
    private static readonly ForwardOptions Split = new() { UseAttnResult = true, SplitQkvInput = true };

    /// <summary>
    /// Logits [B,T,V] of the circuit <paramref name="inGraph"/> (bool [n_forward, n_backward]) on clean inputs,
    /// with out-of-circuit edges taken from <paramref name="ablated"/> source values ([B,T,n_forward,d], e.g.
    /// <see cref="SourceValues"/> of the corrupted inputs, or means).
    /// </summary>
    public Tensor Run(Tensor clean, Tensor ablated, Tensor inGraph, Tensor? attentionMask = null)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var delta = ablated.clone(); // becomes z̃ − z(run) as the sources are computed, in topological order
        var outOf = inGraph.logical_not().to(delta.dtype); // [F, B]
        var hooks = new List<(string, Func<Tensor, HookPoint, Tensor?>)>();
        hooks.AddRange(SourceHooks((slot, value) => delta[.., .., slot] -= value));
        for (var l = 0; l < graph.Layers; l++)
        {
            var layer = l;
            foreach (var qkv in "qkv")
            {
                var first = graph.HeadInputIndex(layer, 0, qkv);
                var prev = graph.PrevIndex(first);
                var mask = outOf[..prev, first..(first + graph.Heads)]; // [prev, H]
                hooks.Add((HookNames.Input(layer, qkv), (x, _) => x.Plus(einsum("btfd,fh->bthd", delta[.., .., ..prev], mask))));
            }
            var mlp = graph.MlpInputIndex(layer);
            var mlpPrev = graph.PrevIndex(mlp);
            var mlpMask = outOf[..mlpPrev, mlp];
            hooks.Add((HookNames.MlpIn(layer), (x, _) => x.Plus(einsum("btfd,f->btd", delta[.., .., ..mlpPrev], mlpMask))));
        }
        var logitsMask = outOf[.., graph.LogitsIndex];
        hooks.Add((HookNames.ResidPost(graph.Layers - 1), (x, _) => x.Plus(einsum("btfd,f->btd", delta, logitsMask))));
        return model.RunWithHooks(clean, hooks, attentionMask, Split).MoveToOuterDisposeScope();
    }

    /// <summary>Every source's output on <paramref name="tokens"/>: [B, T, n_forward, d_model].</summary>
    public Tensor SourceValues(Tensor tokens, Tensor? attentionMask = null)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var values = zeros(tokens.shape[0], tokens.shape[1], graph.NForward, model.Config.DModel, dtype: model.W_E.dtype, device: tokens.device);
        model.RunWithHooks(tokens, SourceHooks((slot, value) => values[.., .., slot] += value), attentionMask, Split);
        return values.MoveToOuterDisposeScope();
    }

    /// <summary>Hooks that hand each source's output to <paramref name="use"/> with its forward slot(s).</summary>
    private IEnumerable<(string, Func<Tensor, HookPoint, Tensor?>)> SourceHooks(Action<TensorIndex, Tensor> use)
    {
        yield return ("hook_embed", (x, _) => { use(TensorIndex.Single(0), x); return null; });
        for (var l = 0; l < graph.Layers; l++)
        {
            var first = graph.HeadIndex(l, 0);
            var mlp = graph.MlpIndex(l);
            yield return (HookNames.Result(l), (x, _) => { use(TensorIndex.Slice(first, first + graph.Heads), x); return null; });
            yield return (HookNames.MlpOut(l), (x, _) => { use(TensorIndex.Single(mlp), x); return null; });
        }
    }

    /// <summary>The full graph: every real edge in.</summary>
    public Tensor FullCircuit()
    {
        var m = zeros(graph.NForward, graph.NBackward, dtype: ScalarType.Bool);
        for (var b = 0; b < graph.NBackward; b++)
        {
            m[..graph.PrevIndex(b), b] = tensor(true);
        }
        return m;
    }

    /// <summary>The empty circuit.</summary>
    public Tensor EmptyCircuit() => zeros(graph.NForward, graph.NBackward, dtype: ScalarType.Bool);

    /// <summary>Logit difference logit[correct] − logit[incorrect] at each row's last real position: [B].</summary>
    public static Tensor LogitDifference(Tensor logits, Tensor lastPosition, Tensor correct, Tensor incorrect)
    {
        var rows = Scalars.Range(logits.shape[0], device: logits.device);
        var last = logits[rows, lastPosition];
        return last.gather(1, correct.view(-1, 1)).squeeze(1) - last.gather(1, incorrect.view(-1, 1)).squeeze(1);
    }
}
