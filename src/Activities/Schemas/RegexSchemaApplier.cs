using System.Text.RegularExpressions;
using Pipelines.Models.Tokenizers;

namespace Pipelines.Activities.Schemas;

/// <summary>
/// The rule-based generator for templated data: a regular expression with one named group per span (the span's
/// title with spaces as "_") that matches the whole prompt. A span runs from its group's first character to the next
/// span's; whitespace before a boundary goes with the following token, as GPT-2-style tokenizers attach it. A group
/// that does not take part in the match is an empty span. Boundaries must fall between tokens.
/// </summary>
public sealed class RegexSchemaApplier
{
    private readonly DatasetSchema _schema;
    private readonly Regex _regex;
    private readonly ITextTokenizer _tokenizer;
    private readonly int _first;

    public RegexSchemaApplier(DatasetSchema schema, string pattern, ITextTokenizer tokenizer, bool prependBos)
    {
        _schema = schema;
        try
        {
            _regex = new Regex(pattern, RegexOptions.CultureInvariant | RegexOptions.ExplicitCapture, TimeSpan.FromSeconds(1));
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"the pattern is not a valid regular expression: {e.Message}");
        }
        var groups = _regex.GetGroupNames().ToHashSet();
        var missing = schema.Spans.Where(s => !groups.Contains(s.Column)).Select(s => s.Column).ToList();
        if (missing.Count > 0)
        {
            throw new ArgumentException($"the pattern has no named group for span(s) {string.Join(", ", missing)}; write (?<{missing[0]}>...) for each span");
        }
        _tokenizer = tokenizer;
        _first = prependBos ? 1 : 0;
    }

    /// <summary>The first real position: 1 when BOS is prepended.</summary>
    public int First => _first;

    public (SpanApplication? App, List<string> Errors) Apply(string prompt, bool allowEmpty)
    {
        var match = _regex.Match(prompt);
        if (!match.Success || match.Index != 0 || match.Length != prompt.Length)
        {
            return (null, ["the pattern does not match the whole prompt"]);
        }
        var ids = _tokenizer.Encode(prompt);
        var chars = new int[_schema.Count];
        for (var s = _schema.Count - 1; s >= 0; s--)
        {
            var g = match.Groups[_schema.Spans[s].Column];
            chars[s] = g.Success ? g.Index : s + 1 < _schema.Count ? chars[s + 1] : prompt.Length;
        }
        if (!string.IsNullOrWhiteSpace(prompt[..chars[0]]))
        {
            return (null, [$"the text before span \"{_schema.Spans[0].Title}\" (\"{prompt[..chars[0]]}\") is in no span"]);
        }
        var starts = new int[_schema.Count];
        for (var s = 0; s < _schema.Count; s++)
        {
            var boundary = s == 0 ? 0 : TokenBoundary(prompt, chars[s], ids);
            if (boundary < 0)
            {
                return (null, [$"span \"{_schema.Spans[s].Title}\" starts at character {chars[s]}, inside a token"]);
            }
            starts[s] = _first + boundary;
        }
        var app = new SpanApplication(starts, _first + ids.Count);
        return (app, SpanValidator.Check(_schema, app, _first, allowEmpty));
    }

    /// <summary>How many of the prompt's tokens lie before character <paramref name="c"/>; −1 if c is inside one.</summary>
    private int TokenBoundary(string prompt, int c, IReadOnlyList<int> ids)
    {
        var prefix = _tokenizer.Encode(prompt[..c].TrimEnd());
        if (prefix.Count > ids.Count)
        {
            return -1;
        }
        for (var i = 0; i < prefix.Count; i++)
        {
            if (prefix[i] != ids[i])
            {
                return -1;
            }
        }
        return prefix.Count;
    }
}
