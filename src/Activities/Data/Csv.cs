using System.Text;

namespace Pipelines.Activities.Data;

/// <summary>RFC 4180 CSV: comma-separated, double-quoted fields may hold commas, quotes ("") and newlines.</summary>
public static class Csv
{
    /// <summary>The header and the rows; a row with the wrong number of fields fails with its line number.</summary>
    public static (string[] Header, List<string[]> Rows) Read(string path, string displayName)
    {
        var records = Parse(File.ReadAllText(path, Encoding.UTF8), displayName);
        if (records.Count == 0)
        {
            throw new Pipelines.Engine.Activities.ActivityException($"{displayName}: empty CSV (no header)");
        }
        var header = records[0].Fields;
        var rows = new List<string[]>();
        foreach (var (line, fields) in records.Skip(1))
        {
            if (fields.Length == 1 && fields[0].Length == 0)
            {
                continue; // blank line
            }
            if (fields.Length != header.Length)
            {
                throw new Pipelines.Engine.Activities.ActivityException($"{displayName}, line {line}: {fields.Length} fields, but the header has {header.Length}");
            }
            rows.Add(fields);
        }
        return (header, rows);
    }

    private static List<(int Line, string[] Fields)> Parse(string text, string displayName)
    {
        var records = new List<(int, string[])>();
        var fields = new List<string>();
        var field = new StringBuilder();
        var line = 1;
        var recordLine = 1;
        var quoted = false;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (quoted)
            {
                if (c == '"')
                {
                    if (i + 1 < text.Length && text[i + 1] == '"')
                    {
                        field.Append('"');
                        i++;
                    }
                    else
                    {
                        quoted = false;
                    }
                }
                else
                {
                    if (c == '\n')
                    {
                        line++;
                    }
                    field.Append(c);
                }
                continue;
            }
            switch (c)
            {
                case '"' when field.Length == 0:
                    quoted = true;
                    break;
                case ',':
                    fields.Add(field.ToString());
                    field.Clear();
                    break;
                case '\r':
                    break;
                case '\n':
                    fields.Add(field.ToString());
                    field.Clear();
                    records.Add((recordLine, fields.ToArray()));
                    fields.Clear();
                    line++;
                    recordLine = line;
                    break;
                default:
                    field.Append(c);
                    break;
            }
        }
        if (quoted)
        {
            throw new Pipelines.Engine.Activities.ActivityException($"{displayName}, line {recordLine}: a quoted field is never closed");
        }
        if (field.Length > 0 || fields.Count > 0)
        {
            fields.Add(field.ToString());
            records.Add((recordLine, fields.ToArray()));
        }
        return records;
    }
}
