using Pipelines.Models.Runtime;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Pipelines.Models.Transformer;

/// <summary>One residual block, sequential (GPT-2, Llama, Qwen2) or parallel (GPT-NeoX).</summary>
public sealed class TransformerBlock : nn.Module
{
    private readonly TransformerConfig _cfg;
#pragma warning disable IDE1006
    public Norm ln1;
    public Norm? ln2;
    public Attention attn;
    public Mlp mlp;
    public HookPoint hook_resid_pre = new("hook_resid_pre"), hook_resid_mid = new("hook_resid_mid"), hook_resid_post = new("hook_resid_post");
    public HookPoint hook_attn_in = new("hook_attn_in"), hook_q_input = new("hook_q_input"), hook_k_input = new("hook_k_input"), hook_v_input = new("hook_v_input");
    public HookPoint hook_attn_out = new("hook_attn_out"), hook_mlp_in = new("hook_mlp_in"), hook_mlp_out = new("hook_mlp_out");
#pragma warning restore IDE1006

    public TransformerBlock(string name, TransformerConfig cfg) : base(name)
    {
        _cfg = cfg;
        ln1 = new Norm("ln1", cfg);
        ln2 = new Norm("ln2", cfg);
        attn = new Attention("attn", cfg);
        mlp = new Mlp("mlp", cfg);
        RegisterComponents();
    }

    public Tensor Forward(Tensor resid, Tensor positions, Tensor? keyMask, LayerKv? cache, ForwardOptions options)
    {
        var residPre = hook_resid_pre.call(resid);
        Tensor qIn, kIn, vIn;
        if (options.SplitQkvInput)
        {
            // Per-head copies of the residual, so each head's query/key/value input can be patched on its own. Each
            // is its own view, so a gradient captured at one flows only through that input.
            Tensor PerHead() => residPre.unsqueeze(2).expand(-1, -1, _cfg.NHeads, -1);
            qIn = ln1.call(hook_q_input.call(PerHead()));
            kIn = ln1.call(hook_k_input.call(PerHead()));
            vIn = ln1.call(hook_v_input.call(PerHead()));
        }
        else
        {
            qIn = kIn = vIn = ln1.call(hook_attn_in.call(residPre));
        }
        var attnOut = hook_attn_out.call(attn.Forward(qIn, kIn, vIn, positions, keyMask, cache, options.UseAttnResult));
        if (_cfg.ParallelAttnMlp)
        {
            var mlpOut = hook_mlp_out.call(mlp.call(ln2!.call(hook_mlp_in.call(residPre.view_as(residPre)))));
            return hook_resid_post.call(residPre.Plus(attnOut).Plus(mlpOut));
        }
        var residMid = hook_resid_mid.call(residPre.Plus(attnOut));
        // view_as: the MLP input is its own autograd node, so its gradient excludes the skip connection (TorchSharp alias()
        // is the same node).
        var mlpOutSeq = hook_mlp_out.call(mlp.call(ln2!.call(hook_mlp_in.call(residMid.view_as(residMid)))));
        return hook_resid_post.call(residMid.Plus(mlpOutSeq));
    }
}

/// <summary>Switches that change what a forward computes (never its result, except where it stops).</summary>
public sealed record ForwardOptions
{
    /// <summary>
    /// Run only the first n blocks and return the residual stream after them ([B,T,d]; no final norm, no unembedding),
    /// as TransformerLens's <c>stop_at_layer</c>. For passes that need activations, not logits.
    /// </summary>
    public int? StopAtLayer { get; init; }

    /// <summary>Compute per-head outputs (hook_result, [B,T,H,d]) and sum them, instead of the fused W_O product.</summary>
    public bool UseAttnResult { get; init; }
    /// <summary>Give each head its own copy of the residual for q, k and v (hook_q_input etc., [B,T,H,d]).</summary>
    public bool SplitQkvInput { get; init; }
}

/// <summary>
/// One config-driven transformer in TransformerLens layout with TransformerLens hook names
/// (<c>hook_embed</c>, <c>blocks.{l}.attn.hook_z</c>, <c>blocks.{l}.hook_resid_pre</c>, ...).
/// </summary>
public sealed class HookedTransformer : nn.Module
{
#pragma warning disable IDE1006
    public Parameter W_E;
    public Parameter? W_pos;
    public ModuleList<TransformerBlock> blocks;
    public Norm ln_final;
    public Parameter W_U;
    public Parameter? b_U;
    public HookPoint hook_embed = new("hook_embed"), hook_pos_embed = new("hook_pos_embed");
#pragma warning restore IDE1006
    private readonly Dictionary<string, HookPoint> _hooks;

    public HookedTransformer(TransformerConfig config) : base("model")
    {
        TorchRuntime.EnsureLoaded();
        if (config.Problems() is { Count: > 0 } problems)
        {
            throw new ArgumentException("invalid transformer config: " + string.Join("; ", problems));
        }
        Config = config;
        W_E = new Parameter(empty(config.DVocab, config.DModel));
        W_pos = config.Positional == PositionalKind.Learned ? new Parameter(empty(config.NCtx, config.DModel)) : null;
        blocks = new ModuleList<TransformerBlock>(Enumerable.Range(0, config.NLayers).Select(i => new TransformerBlock(i.ToString(), config)).ToArray());
        ln_final = new Norm("ln_final", config);
        W_U = new Parameter(empty(config.DModel, config.DVocab));
        b_U = config.UnembedBias ? new Parameter(zeros(config.DVocab)) : null;
        RegisterComponents();
        _hooks = new Dictionary<string, HookPoint>(StringComparer.Ordinal);
        foreach (var (name, module) in named_modules())
        {
            if (module is HookPoint hook)
            {
                hook.Name = name;
                _hooks[name] = hook;
            }
        }
    }

    public TransformerConfig Config { get; }

    /// <summary>Every hook point, by canonical name.</summary>
    public IReadOnlyDictionary<string, HookPoint> HookPoints => _hooks;

    public HookPoint Hook(string name) => _hooks.TryGetValue(name, out var h) ? h : throw new KeyNotFoundException($"no hook point \"{name}\"");

    /// <summary>Removes every hook from every hook point.</summary>
    public void ResetHooks()
    {
        foreach (var h in _hooks.Values)
        {
            h.Clear();
        }
    }

    /// <summary>Initialises weights as GPT-2 does (normal, std 0.02; norms at 1, biases at 0), seeded.</summary>
    public HookedTransformer InitWeights(long seed, double std = 0.02)
    {
        using var _ = no_grad();
        using var generator = new Generator((ulong)seed);
        foreach (var (name, p) in named_parameters())
        {
            var leaf = name.Split('.')[^1];
            if (leaf == "w")
            {
                p.fill_(Scalars.Of(1.0));
            }
            else if (leaf.StartsWith("b", StringComparison.Ordinal))
            {
                p.zero_();
            }
            else
            {
                p.normal_(0, std, generator);
            }
        }
        return this;
    }

    /// <summary>
    /// Logits [B, T, V] for tokens [B, T]. <paramref name="attentionMask"/> [B, T] marks real tokens (1) versus
    /// padding (0; left padding for generation). With a cache, only the new tokens are passed and hooks see only them.
    /// </summary>
    public Tensor Forward(Tensor tokens, Tensor? attentionMask = null, KvCache? cache = null, ForwardOptions? options = null)
    {
        using var scope = NewDisposeScope();
        options ??= new ForwardOptions();
        long b = tokens.shape[0], t = tokens.shape[1];
        CheckTokenIds(tokens);
        if (tokens.device_type != W_E.device_type || tokens.device_index != W_E.device_index)
        {
            // Ids built on the CPU for a model on a GPU: move them (and the mask) to where the weights are.
            tokens = tokens.to(W_E.device);
            attentionMask = attentionMask?.to(W_E.device);
        }
        var newMask = attentionMask ?? ones(b, t, dtype: ScalarType.Int64, device: tokens.device);
        var keyMask = cache is null ? newMask : cache.ExtendMask(newMask);
        // Position of each new token = number of real tokens before it (so left padding does not shift positions).
        var positions = keyMask.cumsum(1, ScalarType.Int64).sub(Scalars.Int(1)).clamp_min(Scalars.Int(0))[.., ^(int)t..];

        // index_select, not advanced indexing: its backward (index_add_) accumulates in a fixed order, so training is
        // bit-deterministic on CPU.
        var resid = hook_embed.call(W_E.index_select(0, tokens.flatten()).view(b, t, -1));
        if (W_pos is not null)
        {
            if (positions.numel() > 0 && positions.max().item<long>() is var top && top >= Config.NCtx)
            {
                throw new ArgumentException($"the input reaches position {top + 1}, beyond this model's context of {Config.NCtx} positions");
            }
            resid = resid.Plus(hook_pos_embed.call(W_pos.index_select(0, positions.flatten()).view(b, t, -1)));
        }
        // No mask and no cache: every key is real and queries and keys are the same positions (plain causal attention).
        var dense = attentionMask is null && cache is null;
        var stop = options.StopAtLayer ?? blocks.Count;
        if (stop < 0 || stop > blocks.Count)
        {
            throw new ArgumentOutOfRangeException(nameof(options), $"stop at layer {stop}: the model has {blocks.Count} layers");
        }
        for (var l = 0; l < stop; l++)
        {
            resid = blocks[l].Forward(resid, positions, dense ? null : keyMask, cache?.Layers[l], options);
        }
        if (options.StopAtLayer is not null)
        {
            return resid.MoveToOuterDisposeScope();
        }
        var logits = matmul(ln_final.call(resid), W_U);
        if (b_U is not null)
        {
            logits = logits.Plus(b_U);
        }
        return logits.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Token ids outside [0, d_vocab) would reach libtorch's index_select and fail with a page of C++ frames; refuse
    /// them here with one line (the check is one reduction over the ids).
    /// </summary>
    private void CheckTokenIds(Tensor tokens)
    {
        if (tokens.numel() == 0)
        {
            return;
        }
        using var scope = NewDisposeScope();
        var min = tokens.min().item<long>();
        var max = tokens.max().item<long>();
        if (min < 0 || max >= Config.DVocab)
        {
            throw new ArgumentException($"token id {(min < 0 ? min : max)} is outside this model's vocabulary (0..{Config.DVocab - 1}): the prompt was tokenized for another model");
        }
    }

    /// <summary>
    /// Runs with temporary hooks, removed afterwards even on failure. The forward options a named hook needs are
    /// turned on (<see cref="HookNames.OptionsFor"/>): a hook on <c>hook_result</c> or <c>hook_q_input</c> always fires.
    /// </summary>
    public Tensor RunWithHooks(Tensor tokens, IEnumerable<(string Name, Func<Tensor, HookPoint, Tensor?> Hook)> hooks, Tensor? attentionMask = null, ForwardOptions? options = null)
    {
        var list = hooks.ToList();
        return RunWithHooksCore(tokens, list, attentionMask, HookNames.OptionsFor(list.Select(h => h.Name), options));
    }

    private Tensor RunWithHooksCore(Tensor tokens, IReadOnlyList<(string Name, Func<Tensor, HookPoint, Tensor?> Hook)> hooks, Tensor? attentionMask, ForwardOptions? options)
    {
        var removers = hooks.Select(h => Hook(h.Name).Add(h.Hook)).ToList();
        try
        {
            return Forward(tokens, attentionMask, null, options);
        }
        finally
        {
            foreach (var r in removers)
            {
                r.Dispose();
            }
        }
    }

    /// <summary>Logits plus a cache of every activation whose hook name passes <paramref name="filter"/> (all by default).</summary>
    public (Tensor Logits, ActivationCache Cache) RunWithCache(Tensor tokens, Func<string, bool>? filter = null, Tensor? attentionMask = null, ForwardOptions? options = null)
    {
        var cache = new ActivationCache();
        var names = _hooks.Keys.Where(filter ?? (_ => true)).ToList();
        try
        {
            // With a filter, the options the chosen hooks need are turned on; caching everything keeps the caller's options
            // (as TransformerLens' run_with_cache does), so per-head copies are made only when asked for.
            var hooks = names.Select(n => (n, (Func<Tensor, HookPoint, Tensor?>)((x, h) =>
            {
                cache.Store(h.Name, x);
                return null;
            }))).ToList();
            var logits = RunWithHooksCore(tokens, hooks, attentionMask, filter is null ? options : HookNames.OptionsFor(names, options));
            return (logits, cache);
        }
        catch
        {
            cache.Dispose();
            throw;
        }
    }
}
