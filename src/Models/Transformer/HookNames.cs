namespace Pipelines.Models.Transformer;

/// <summary>
/// The one place hook names are built (TransformerLens' <c>get_act_name</c> idea): code asks for
/// <c>HookNames.Result(l)</c>, never writes <c>"blocks.{l}.attn.hook_result"</c> by hand, so a typo cannot silently
/// name a hook that never fires. <see cref="OptionsFor"/> turns on the forward options a hook needs to be called at all.
/// </summary>
public static class HookNames
{
    public const string Embed = "hook_embed";
    public const string PosEmbed = "hook_pos_embed";

    public static string ResidPre(int layer) => $"blocks.{layer}.hook_resid_pre";
    public static string ResidMid(int layer) => $"blocks.{layer}.hook_resid_mid";
    public static string ResidPost(int layer) => $"blocks.{layer}.hook_resid_post";
    public static string AttnIn(int layer) => $"blocks.{layer}.hook_attn_in";
    public static string AttnOut(int layer) => $"blocks.{layer}.hook_attn_out";
    public static string MlpIn(int layer) => $"blocks.{layer}.hook_mlp_in";
    public static string MlpOut(int layer) => $"blocks.{layer}.hook_mlp_out";

    /// <summary>Per-head q, k or v input (needs <see cref="ForwardOptions.SplitQkvInput"/>): <paramref name="qkv"/> is "q", "k" or "v".</summary>
    public static string Input(int layer, string qkv) => qkv is "q" or "k" or "v"
        ? $"blocks.{layer}.hook_{qkv}_input"
        : throw new ArgumentException($"expected q, k or v, got \"{qkv}\"", nameof(qkv));

    /// <summary>Per-head q, k or v input by its letter.</summary>
    public static string Input(int layer, char qkv) => Input(layer, qkv.ToString());

    /// <summary>An attention hook by its short name: q, k, v, rot_q, rot_k, attn_scores, pattern, z or result.</summary>
    public static string Attn(int layer, string name) => name is "q" or "k" or "v" or "rot_q" or "rot_k" or "attn_scores" or "pattern" or "z" or "result"
        ? $"blocks.{layer}.attn.hook_{name}"
        : throw new ArgumentException($"unknown attention hook \"{name}\"", nameof(name));

    public static string Q(int layer) => Attn(layer, "q");
    public static string K(int layer) => Attn(layer, "k");
    public static string V(int layer) => Attn(layer, "v");
    public static string RotQ(int layer) => Attn(layer, "rot_q");
    public static string RotK(int layer) => Attn(layer, "rot_k");
    public static string Pattern(int layer) => Attn(layer, "pattern");
    public static string Z(int layer) => Attn(layer, "z");

    /// <summary>Per-head output [B,T,H,d] (needs <see cref="ForwardOptions.UseAttnResult"/>).</summary>
    public static string Result(int layer) => Attn(layer, "result");

    public static string Ln1Scale(int layer) => $"blocks.{layer}.ln1.hook_scale";
    public static string Ln1Normalized(int layer) => $"blocks.{layer}.ln1.hook_normalized";

    /// <summary>
    /// The forward options the named hooks need to be called: per-head results need <c>UseAttnResult</c>, per-head
    /// q/k/v inputs need <c>SplitQkvInput</c>. Without them those hooks exist but never fire.
    /// </summary>
    public static ForwardOptions OptionsFor(IEnumerable<string> names, ForwardOptions? start = null)
    {
        var options = start ?? new ForwardOptions();
        foreach (var name in names)
        {
            if (name.EndsWith(".attn.hook_result", StringComparison.Ordinal) && !options.UseAttnResult)
            {
                options = options with { UseAttnResult = true };
            }
            if ((name.EndsWith(".hook_q_input", StringComparison.Ordinal) || name.EndsWith(".hook_k_input", StringComparison.Ordinal) ||
                 name.EndsWith(".hook_v_input", StringComparison.Ordinal)) && !options.SplitQkvInput)
            {
                options = options with { SplitQkvInput = true };
            }
        }
        return options;
    }
}
