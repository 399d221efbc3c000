using System.Text.Json;
using System.Text.Json.Serialization;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities.Causal;

/// <summary>One probe (a layer and position): held-out accuracy, balanced accuracy, its 95 % interval, the control task's accuracy and the selectivity.</summary>
public sealed record ProbeCell(int Layer, string Position, double Accuracy, double BalancedAccuracy, double Low, double High, double Control, double Selectivity, double Lambda, double TrainAccuracy);

/// <summary>
/// probe.train's result (<c>pipelines.probe-results/1</c>): per layer × position, a multinomial logistic probe's test
/// accuracy and the Hewitt–Liang control task's, with selectivity = accuracy − control. Chance is the majority class's
/// share of the test rows.
/// </summary>
public sealed record ProbeResults
{
    public const string FormatName = "pipelines.probe-results/1";

    public string Format { get; init; } = FormatName;
    public required string Hook { get; init; }
    public required IReadOnlyList<int> Layers { get; init; }
    public required IReadOnlyList<string> Positions { get; init; }
    public required IReadOnlyList<string> Classes { get; init; }
    public required double Chance { get; init; }
    public required int Train { get; init; }
    public required int Validation { get; init; }
    public required int Test { get; init; }
    public required string Split { get; init; }
    public required string ControlTask { get; init; }
    /// <summary>[layer][position], in the order of <see cref="Layers"/> and <see cref="Positions"/>.</summary>
    public required IReadOnlyList<IReadOnlyList<ProbeCell>> Cells { get; init; }
    public bool HigherIsBetter { get; init; } = true;

    /// <summary>The cell with the highest selectivity (ties: the earlier layer).</summary>
    public ProbeCell Best => Cells.SelectMany(r => r).MaxBy(c => (c.Selectivity, -c.Layer))!;

    private static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        WriteIndented = true,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public void Write(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Options) + "\n");

    public static ProbeResults Read(string path, string name = "probes")
    {
        try
        {
            var r = JsonSerializer.Deserialize<ProbeResults>(File.ReadAllText(path), Options) ?? throw new JsonException("null");
            return r.Format == FormatName ? r : throw new ActivityException($"{name}: expected format \"{FormatName}\", got \"{r.Format}\"");
        }
        catch (JsonException e)
        {
            throw new ActivityException($"{name}: not probe results ({e.Path}: {e.Message.Split('.')[0]})");
        }
    }
}
