using System.Text.Json;
using Pipelines.Engine.Activities;

namespace Pipelines.Engine.Running;

/// <summary>
/// A failed step's message in one line: what the activity said, never a managed stack trace or libtorch's C++
/// frames ("Exception raised from … frame #0 …"), which native errors carry in their message.
/// </summary>
public static class ErrorText
{
    public const int MaxLength = 600;

    public static string OneLine(Exception e)
    {
        var known = e is ActivityException or IOException or JsonException or ArgumentException or InvalidDataException or FormatException;
        var text = e.Message;
        var native = text.IndexOf("Exception raised from", StringComparison.Ordinal);
        if (native >= 0)
        {
            text = text[..native];
        }
        text = text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).FirstOrDefault() ?? "";
        if (text.Length > MaxLength)
        {
            text = text[..MaxLength] + "…";
        }
        if (text.Length == 0)
        {
            text = "failed without a message";
        }
        return known || e.GetType().Name is "ExternalException" or "SEHException" ? text : $"{e.GetType().Name}: {text}";
    }
}
