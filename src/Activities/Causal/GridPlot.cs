using System.Globalization;

namespace Pipelines.Activities.Causal;

/// <summary>
/// The causal family's pictures, drawn with ScottPlot: layer × position heatmaps (layer 0 at the bottom, each cell
/// annotated) with a diverging palette centred at 0 for patching or viridis over [0, 1] for accuracies, and curves
/// over layers with an optional chance line.
/// </summary>
public static class GridPlot
{
    /// <summary>A heatmap of <paramref name="values"/>[row][column]; null cells are grey.</summary>
    public static void Heatmap(string path, IReadOnlyList<IReadOnlyList<double?>> values, IReadOnlyList<string> rows, IReadOnlyList<string> columns,
        string title, string xLabel, string yLabel, bool diverging, string format = "0.00")
    {
        var plot = new ScottPlot.Plot();
        var finite = values.SelectMany(r => r).Where(v => v is { } x && double.IsFinite(x)).Select(v => v!.Value).ToList();
        var extent = finite.Count == 0 ? 1 : Math.Max(1e-9, finite.Max(Math.Abs));
        ScottPlot.IColormap map = diverging ? new ScottPlot.Colormaps.Balance() : new ScottPlot.Colormaps.Viridis();
        for (var r = 0; r < values.Count; r++)
        {
            for (var c = 0; c < values[r].Count; c++)
            {
                var v = values[r][c];
                var rect = plot.Add.Rectangle(c - 0.5, c + 0.5, r - 0.5, r + 0.5);
                rect.LineWidth = 0;
                if (v is not { } x || !double.IsFinite(x))
                {
                    rect.FillColor = ScottPlot.Colors.LightGray;
                    continue;
                }
                var at = diverging ? 0.5 + x / (2 * extent) : Math.Clamp(x, 0, 1);
                rect.FillColor = map.GetColor(Math.Clamp(at, 0, 1));
                if (values[r].Count <= 40 && values.Count <= 40)
                {
                    var text = plot.Add.Text(x.ToString(format, CultureInfo.InvariantCulture), c, r);
                    text.LabelFontSize = values[r].Count > 16 ? 8 : 11;
                    text.LabelAlignment = ScottPlot.Alignment.MiddleCenter;
                    var light = diverging ? Math.Abs(at - 0.5) > 0.3 : at < 0.6;
                    text.LabelFontColor = light ? ScottPlot.Colors.White : ScottPlot.Colors.Black;
                }
            }
        }
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, columns.Count).Select(i => (double)i).ToArray(), columns.ToArray());
        plot.Axes.Left.SetTicks(Enumerable.Range(0, rows.Count).Select(i => (double)i).ToArray(), rows.ToArray());
        if (columns.Count > 8)
        {
            plot.Axes.Bottom.TickLabelStyle.Rotation = 60;
            plot.Axes.Bottom.TickLabelStyle.Alignment = ScottPlot.Alignment.MiddleLeft;
        }
        plot.Axes.SetLimits(-0.5, columns.Count - 0.5, -0.5, rows.Count - 0.5);
        plot.Title(diverging ? $"{title} (blue < 0 < red, ±{extent.ToString("0.###", CultureInfo.InvariantCulture)})" : title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.SavePng(path, Math.Clamp(140 + 46 * columns.Count, 480, 1800), Math.Clamp(160 + 34 * rows.Count, 320, 1400));
    }

    /// <summary>Curves over an x axis of labels (one series each), y from 0 to 1.1 unless given, with a dashed chance line.</summary>
    public static void Curves(string path, IReadOnlyList<string> x, IReadOnlyList<(string Name, IReadOnlyList<double?> Values)> series, string title, string yLabel,
        double? chance = null, (double Min, double Max)? y = null, string xLabel = "layer")
    {
        var plot = new ScottPlot.Plot();
        var colors = new[] { ScottPlot.Colors.SteelBlue, ScottPlot.Colors.Crimson, ScottPlot.Colors.SeaGreen, ScottPlot.Colors.DarkOrange, ScottPlot.Colors.Purple, ScottPlot.Colors.Gray };
        var i = 0;
        foreach (var (name, values) in series)
        {
            var xs = Enumerable.Range(0, values.Count).Where(k => values[k] is { } v && double.IsFinite(v)).ToList();
            var line = plot.Add.Scatter(xs.Select(k => (double)k).ToArray(), xs.Select(k => values[k]!.Value).ToArray());
            line.LegendText = name;
            line.Color = colors[i++ % colors.Length];
            line.LineWidth = 2;
        }
        if (chance is { } c)
        {
            var h = plot.Add.HorizontalLine(c);
            h.LinePattern = ScottPlot.LinePattern.Dashed;
            h.Color = ScottPlot.Colors.Gray;
            h.LegendText = $"chance ({c.ToString("0.##", CultureInfo.InvariantCulture)})";
        }
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, x.Count).Select(k => (double)k).ToArray(), x.ToArray());
        var (lo, hi) = y ?? (0, 1.1);
        plot.Axes.SetLimitsY(lo, hi);
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.ShowLegend(ScottPlot.Alignment.LowerRight);
        plot.SavePng(path, 820, 440);
    }
}
