using System.Text.Json;
using System.Text.Json.Nodes;
using FluentValidation;
using Pipelines.Activities.Data;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Reports;

/// <summary>Writes a JSON report that profiles one or more datasets: counts, fields, types and value ranges.</summary>
[Activity("report.json", Version = 1, Category = "Reports", Summary = "Write a JSON report profiling datasets: counts, fields, types, value ranges")]
[Output("report", ArtifactKinds.Report, Help = "The report", MediaType = "application/json", FileName = "report.json")]
public sealed class JsonReportActivity : Activity<JsonReportActivity.Input>
{
    public sealed record Input
    {
        [Input("The datasets to profile, in order", Kind = ArtifactKinds.Dataset)]
        public required IReadOnlyList<Artifact> Datasets { get; init; }

        [Input("A title for the report")]
        public string Title { get; init; } = "Dataset report";

        [Input("Names for the datasets, in the same order (default: dataset-1, dataset-2, ...)")]
        public IReadOnlyList<string> Names { get; init; } = [];
    }

    /// <summary>Title and names must be usable.</summary>
    public sealed class Validator : AbstractValidator<Input>
    {
        public Validator()
        {
            RuleFor(i => i.Title).NotEmpty().MaximumLength(200).WithMessage("expected a title of 1 to 200 characters");
            RuleForEach(i => i.Names).NotEmpty().WithMessage("expected non-empty dataset names");
        }
    }

    protected override Task ExecuteAsync(Input input, ActivityContext context)
    {
        if (input.Names.Count > 0 && input.Names.Count != input.Datasets.Count)
        {
            throw new ActivityException($"names has {input.Names.Count} entries but there are {input.Datasets.Count} datasets");
        }
        var datasets = new JsonArray();
        for (var i = 0; i < input.Datasets.Count; i++)
        {
            context.CancellationToken.ThrowIfCancellationRequested();
            var artifact = input.Datasets[i];
            var rows = Jsonl.Read(artifact.Path, $"dataset {i + 1}");
            datasets.Add(new JsonObject
            {
                ["name"] = input.Names.Count > 0 ? input.Names[i] : $"dataset-{i + 1}",
                ["digest"] = artifact.Digest,
                ["examples"] = rows.Count,
                ["fields"] = Profile(rows),
            });
            context.Report((i + 1.0) / input.Datasets.Count, $"profiled {i + 1} of {input.Datasets.Count}");
        }
        var report = new JsonObject
        {
            ["title"] = input.Title,
            ["datasets"] = datasets,
            ["totalExamples"] = datasets.Sum(d => d!["examples"]!.GetValue<int>()),
        };
        File.WriteAllText(context.OutputFile("report"), report.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        return Task.CompletedTask;
    }

    /// <summary>Per field: how many rows have it, the JSON types seen, and ranges of numbers and string lengths.</summary>
    internal static JsonObject Profile(IReadOnlyList<JsonObject> rows)
    {
        var fields = new SortedDictionary<string, FieldStats>(StringComparer.Ordinal);
        foreach (var row in rows)
        {
            foreach (var (name, value) in row)
            {
                if (!fields.TryGetValue(name, out var stats))
                {
                    fields[name] = stats = new FieldStats();
                }
                stats.Add(value);
            }
        }
        var result = new JsonObject();
        foreach (var (name, stats) in fields)
        {
            result[name] = stats.ToJson();
        }
        return result;
    }

    private sealed class FieldStats
    {
        private readonly SortedDictionary<string, int> _types = new(StringComparer.Ordinal);
        private int _present;
        private double _numMin = double.PositiveInfinity, _numMax = double.NegativeInfinity, _numSum;
        private int _numCount;
        private int _lenMin = int.MaxValue, _lenMax;
        private long _lenSum;
        private int _strCount;
        private readonly HashSet<string> _distinct = new(StringComparer.Ordinal);

        public void Add(JsonNode? value)
        {
            _present++;
            var kind = value?.GetValueKind() ?? JsonValueKind.Null;
            var type = kind switch
            {
                JsonValueKind.True or JsonValueKind.False => "boolean",
                _ => kind.ToString().ToLowerInvariant(),
            };
            _types[type] = _types.GetValueOrDefault(type) + 1;
            if (kind == JsonValueKind.Number)
            {
                var d = value!.GetValue<double>();
                _numMin = Math.Min(_numMin, d);
                _numMax = Math.Max(_numMax, d);
                _numSum += d;
                _numCount++;
            }
            else if (kind == JsonValueKind.String)
            {
                var s = value!.GetValue<string>();
                _lenMin = Math.Min(_lenMin, s.Length);
                _lenMax = Math.Max(_lenMax, s.Length);
                _lenSum += s.Length;
                _strCount++;
                if (_distinct.Count <= 10_000)
                {
                    _distinct.Add(s);
                }
            }
        }

        public JsonObject ToJson()
        {
            var types = new JsonObject();
            foreach (var (k, v) in _types)
            {
                types[k] = v;
            }
            var obj = new JsonObject { ["present"] = _present, ["types"] = types };
            if (_numCount > 0)
            {
                obj["numbers"] = new JsonObject { ["min"] = JsonNumbers.Round(_numMin, 15), ["max"] = JsonNumbers.Round(_numMax, 15), ["mean"] = JsonNumbers.Round(_numSum / _numCount) };
            }
            if (_strCount > 0)
            {
                obj["strings"] = new JsonObject
                {
                    ["minLength"] = _lenMin,
                    ["maxLength"] = _lenMax,
                    ["meanLength"] = Math.Round((double)_lenSum / _strCount, 3),
                    ["distinct"] = _distinct.Count > 10_000 ? ">10000" : _distinct.Count,
                };
            }
            return obj;
        }
    }
}
