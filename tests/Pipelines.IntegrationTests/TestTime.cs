namespace Pipelines.IntegrationTests;

/// <summary>
/// Waits that stay robust on a loaded machine: every limit is scaled by the load seen when the tests start
/// (1-minute load average per core, at least 1, at most 8) or by PIPELINES_TEST_TIMEOUT_SCALE, and the long waits
/// are progress-based (they restart whenever output or state changes), so a slow but working run is never cut off.
/// </summary>
public static class TestTime
{
    private static readonly Lazy<double> Factor = new(() =>
    {
        if (double.TryParse(Environment.GetEnvironmentVariable("PIPELINES_TEST_TIMEOUT_SCALE"), System.Globalization.CultureInfo.InvariantCulture, out var s) && s > 0)
        {
            return s;
        }
        try
        {
            var load = double.Parse(File.ReadAllText("/proc/loadavg").Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
            return Math.Clamp(load / Environment.ProcessorCount, 1, 8);
        }
        catch (Exception e) when (e is IOException or FormatException or UnauthorizedAccessException)
        {
            return 1;
        }
    });

    public static double Scale => Factor.Value;

    public static TimeSpan Seconds(double seconds) => TimeSpan.FromSeconds(seconds * Scale);
}
