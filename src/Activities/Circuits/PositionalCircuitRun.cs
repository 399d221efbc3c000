using Pipelines.Models.Runtime;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>
/// Runs a positional circuit (research §7.7, with the ablation it is given): at every position of span s, a
/// destination's input from a source outside the circuit at s carries the ablated value; inside a head, the query at
/// span s reads keys and values of span s′ through the ablated pattern and values unless AttnIn(s′) → AttnOut(s) is
/// in the circuit: z[t] += Σ_{t′∈s′} (A*[t,t′]v*[t′] − A[t,t′]v[t′]). BOS and padding lie in no span and are never
/// ablated. The full circuit is the clean model; the empty one, the ablated (e.g. corrupted) run.
/// </summary>
public sealed class PositionalCircuitRun(HookedTransformer model, ComputationGraph graph)
{
    private static readonly ForwardOptions Split = new() { UseAttnResult = true, SplitQkvInput = true };

    /// <summary>The ablated run's pattern and values per layer, plus its source values.</summary>
    public sealed record Ablated(Tensor Sources, IReadOnlyList<Tensor> Patterns, IReadOnlyList<Tensor> Values) : IDisposable
    {
        public void Dispose()
        {
            Sources.Dispose();
            foreach (var t in Patterns.Concat(Values))
            {
                t.Dispose();
            }
        }
    }

    public Ablated Capture(Tensor tokens, Tensor? mask)
    {
        var sources = new CircuitRun(model, graph).SourceValues(tokens, mask);
        var patterns = new Tensor[graph.Layers];
        var values = new Tensor[graph.Layers];
        using (no_grad())
        {
            var hooks = new List<(string, Func<Tensor, HookPoint, Tensor?>)>();
            for (var l = 0; l < graph.Layers; l++)
            {
                var layer = l;
                hooks.Add((HookNames.Pattern(l), (x, _) => { patterns[layer] = x.detach().clone().DetachFromDisposeScope(); return null; }));
                hooks.Add((HookNames.V(l), (x, _) => { values[layer] = Expand(x).detach().clone().DetachFromDisposeScope(); return null; }));
            }
            model.RunWithHooks(tokens, hooks, mask, Split).Dispose();
        }
        return new Ablated(sources, patterns, values);
    }

    private Tensor Expand(Tensor kv) => kv.shape[2] == graph.Heads ? kv : kv.repeat_interleave(graph.Heads / kv.shape[2], dim: 2);

    /// <summary>Logits of the circuit given by <paramref name="nonCrossing"/> [S,F,X] and <paramref name="crossing"/> [S,S,L·H] (bool).</summary>
    public Tensor Run(Tensor clean, Tensor? mask, Tensor spans, Ablated ablated, Tensor nonCrossing, Tensor crossing)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var dtype = ablated.Sources.dtype;
        var spanMask = spans.to(dtype); // [B,S,T]
        // Per-position "out of circuit" flags: out[b,t,f,x] = Σ_s spans[b,s,t]·¬in[s,f,x].
        var outOf = einsum("bst,sfx->btfx", spanMask, nonCrossing.logical_not().to(dtype));
        var tLen = clean.shape[1];
        var causal = ones(tLen, tLen, dtype: ScalarType.Bool, device: clean.device).tril().to(dtype);
        // crossOut[b,lh,t,t′] = Σ_{s,s′} spans[b,s,t]·spans[b,s′,t′]·¬cross[s,s′,lh], for t′ ≤ t.
        var crossOut = einsum("bst,sur,buv->brtv", spanMask, crossing.logical_not().to(dtype), spanMask) * causal;
        var delta = ablated.Sources.clone();
        var hooks = new List<(string, Func<Tensor, HookPoint, Tensor?>)>
        {
            ("hook_embed", (x, _) => { delta[.., .., 0] -= x; return null; }),
        };
        var patterns = new Tensor?[graph.Layers];
        var values = new Tensor?[graph.Layers];
        for (var l = 0; l < graph.Layers; l++)
        {
            var layer = l;
            var first = graph.HeadIndex(l, 0);
            hooks.Add((HookNames.Result(l), (x, _) => { delta[.., .., first..(first + graph.Heads)] -= x; return null; }));
            hooks.Add((HookNames.MlpOut(l), (x, _) => { delta[.., .., graph.MlpIndex(layer)] -= x; return null; }));
            foreach (var qkv in "qkv")
            {
                var dest = graph.HeadInputIndex(l, 0, qkv);
                var prev = graph.PrevIndex(dest);
                hooks.Add((HookNames.Input(l, qkv), (x, _) => x.Plus(einsum("btfd,btfh->bthd", delta[.., .., ..prev], outOf[.., .., ..prev, dest..(dest + graph.Heads)]))));
            }
            var mlp = graph.MlpInputIndex(l);
            var mlpPrev = graph.PrevIndex(mlp);
            hooks.Add((HookNames.MlpIn(l), (x, _) => x.Plus(einsum("btfd,btf->btd", delta[.., .., ..mlpPrev], outOf[.., .., ..mlpPrev, mlp]))));
            hooks.Add((HookNames.Pattern(l), (x, _) => { patterns[layer] = x; return null; }));
            hooks.Add((HookNames.V(l), (x, _) => { values[layer] = Expand(x); return null; }));
            var heads = TensorIndex.Slice(l * graph.Heads, (l + 1) * graph.Heads);
            hooks.Add((HookNames.Z(l), (z, _) =>
            {
                var w = crossOut[.., heads]; // [B,H,T,T′]
                var swap = einsum("bhtu,buhe->bthe", w * ablated.Patterns[layer], ablated.Values[layer])
                    - einsum("bhtu,buhe->bthe", w * patterns[layer]!, values[layer]!);
                return z.Plus(swap.to(z.dtype));
            }));
        }
        hooks.Add((HookNames.ResidPost(graph.Layers - 1), (x, _) => x.Plus(einsum("btfd,btf->btd", delta, outOf[.., .., .., graph.LogitsIndex]))));
        return model.RunWithHooks(clean, hooks, mask, Split).MoveToOuterDisposeScope();
    }
}
