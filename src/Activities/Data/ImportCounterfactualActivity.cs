using System.Globalization;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Data;

/// <summary>
/// Imports counterfactual pairs from the layouts people already have: EAP-IG's CSVs (<c>clean, corrupted</c> plus
/// <c>label</c> for greater-than or <c>correct_idx, incorrect_idx</c> token ids for IOI), JSONL with the same fields,
/// or MIB's Hugging Face rows (<c>prompt</c> plus a <c>*_counterfactual</c> object; see <see cref="MibRows"/>).
/// Rows become <c>{clean, corrupted, label | correct_idx/incorrect_idx | correct/incorrect, ...}</c>.
/// </summary>
[Activity("data.import-counterfactual", Version = 2, Category = "Data", Summary = "Import counterfactual pairs from EAP-IG CSV, MIB Hugging Face JSONL, or JSONL files")]
[Output("dataset", ArtifactKinds.Dataset, Help = "Rows with clean, corrupted and the answer fields", MediaType = "application/x-ndjson", FileName = "dataset.jsonl")]
public sealed class ImportCounterfactualActivity : Activity<ImportCounterfactualActivity.Input>
{
    public sealed record Input
    {
        [Input("A .csv (EAP-IG layout) or .jsonl file", IsPath = true, PathKind = PathKind.File)]
        public required string Path { get; init; }

        [Input("Import at most this many pairs (0: all)", Minimum = 0)]
        public int Limit { get; init; }

        [Input("MIB rows: the counterfactual column, e.g. s2_io_flip_counterfactual (empty: the task's MIB default)")]
        public string Counterfactual { get; init; } = "";
    }

    private static readonly string[] IntegerColumns = ["label", "correct_idx", "incorrect_idx"];

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        var name = System.IO.Path.GetFileName(input.Path);
        List<JsonObject> rows;
        if (input.Path.EndsWith(".csv", StringComparison.OrdinalIgnoreCase))
        {
            var (header, records) = Csv.Read(input.Path, name);
            foreach (var required in new[] { "clean", "corrupted" })
            {
                if (!header.Contains(required))
                {
                    throw new ActivityException($"{name}: no \"{required}\" column; expected EAP-IG's layout (clean, corrupted, and label or correct_idx/incorrect_idx)");
                }
            }
            rows = [];
            for (var r = 0; r < records.Count; r++)
            {
                var row = new JsonObject();
                for (var c = 0; c < header.Length; c++)
                {
                    var column = header[c];
                    if (column.Length == 0)
                    {
                        row["source_index"] = records[r][c]; // pandas' unnamed index column
                        continue;
                    }
                    if (IntegerColumns.Contains(column))
                    {
                        if (!long.TryParse(records[r][c], NumberStyles.Integer, CultureInfo.InvariantCulture, out var value))
                        {
                            throw new ActivityException($"{name}, row {r + 1}: \"{column}\" must be an integer, got \"{records[r][c]}\"");
                        }
                        row[column] = value;
                    }
                    else
                    {
                        row[column] = records[r][c];
                    }
                }
                rows.Add(row);
            }
        }
        else
        {
            rows = Jsonl.Read(input.Path, name, context);
            if (rows.Count > 0 && rows[0]["clean"] is null && rows[0]["prompt"] is not null)
            {
                rows = MibRows.Convert(rows, name, input.Counterfactual);
            }
            foreach (var (row, i) in rows.Select((row, i) => (row, i)))
            {
                if (row["clean"] is null || row["corrupted"] is null)
                {
                    throw new ActivityException($"{name}, line {i + 1}: expected \"clean\" and \"corrupted\" fields");
                }
            }
        }
        if (input.Limit > 0)
        {
            rows = rows.Take(input.Limit).ToList();
        }
        Jsonl.Write(context.OutputFile("dataset"), rows);
        context.Log($"imported {rows.Count} pairs from {name}");
        return Task.CompletedTask;
    }
}
