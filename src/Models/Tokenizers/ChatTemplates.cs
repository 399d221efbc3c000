namespace Pipelines.Models.Tokenizers;

/// <summary>A chat message.</summary>
public sealed record ChatMessage(string Role, string Content);

/// <summary>
/// Chat templates of the supported families, with assistant prefill: the prompt ends inside the assistant turn
/// (no end-of-turn token after the prefill), so generation continues the prefill.
/// </summary>
public static class ChatTemplates
{
    public static readonly IReadOnlyList<string> Families = ["llama3", "llama2", "qwen2", "deepseek-r1", "plain"];

    /// <summary>The template family for a model type ("llama" assumes Llama 3's format).</summary>
    public static string ForArchitecture(string architecture) => architecture switch
    {
        "llama" => "llama3",
        "qwen2" => "qwen2",
        _ => "plain",
    };

    /// <summary>
    /// The prompt text of a conversation, ending inside the assistant's turn with <paramref name="prefill"/> so that
    /// generation continues it. <paramref name="thought"/> (reasoning templates, <c>deepseek-r1</c>): the prefill goes
    /// inside the opened <c>&lt;think&gt;</c> block; otherwise a reasoning template's thinking is closed first.
    /// </summary>
    public static string Format(string family, IReadOnlyList<ChatMessage> messages, string? prefill = null, bool thought = false)
    {
        var p = prefill ?? "";
        switch (family)
        {
            case "deepseek-r1":
                // DeepSeek-R1's template (its distills' tokenizer_config.json): the assistant turn opens <think>.
                var sys = messages.FirstOrDefault(m => m.Role == "system")?.Content ?? "";
                var r1 = "<｜begin▁of▁sentence｜>" + sys + string.Concat(messages.Where(m => m.Role != "system")
                    .Select(m => m.Role == "user" ? $"<｜User｜>{m.Content}" : $"<｜Assistant｜>{m.Content}<｜end▁of▁sentence｜>"));
                return r1 + "<｜Assistant｜><think>\n" + (thought ? p : "\n</think>\n\n" + p);
            case "llama3":
                var l3 = "<|begin_of_text|>" + string.Concat(messages.Select(m => $"<|start_header_id|>{m.Role}<|end_header_id|>\n\n{m.Content}<|eot_id|>"));
                return l3 + "<|start_header_id|>assistant<|end_header_id|>\n\n" + p;
            case "llama2":
                var system = messages.FirstOrDefault(m => m.Role == "system")?.Content;
                var turns = messages.Where(m => m.Role != "system").ToList();
                var text = "";
                for (var i = 0; i < turns.Count; i++)
                {
                    var m = turns[i];
                    if (m.Role == "user")
                    {
                        var content = i == 0 && system is not null ? $"<<SYS>>\n{system}\n<</SYS>>\n\n{m.Content}" : m.Content;
                        text += $"<s>[INST] {content} [/INST]";
                    }
                    else
                    {
                        text += $" {m.Content} </s>";
                    }
                }
                return text + (p.Length > 0 ? " " + p : "");
            case "qwen2":
                var msgs = messages.Any(m => m.Role == "system") ? messages : [new ChatMessage("system", "You are a helpful assistant."), .. messages];
                return string.Concat(msgs.Select(m => $"<|im_start|>{m.Role}\n{m.Content}<|im_end|>\n")) + "<|im_start|>assistant\n" + p;
            case "plain":
                return string.Concat(messages.Select(m => $"{Capital(m.Role)}: {m.Content}\n")) + "Assistant:" + (p.Length > 0 ? " " + p : "");
            default:
                throw new ArgumentException($"unknown chat template \"{family}\"; expected one of: {string.Join(", ", Families)}");
        }
    }

    private static string Capital(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..];
}
