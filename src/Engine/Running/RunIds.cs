using System.Globalization;

namespace Pipelines.Engine.Running;

/// <summary>Run ids sort by time and are short enough to type: <c>20261125-031522-a1b2</c>.</summary>
public static class RunIds
{
    public static string New() =>
        DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture) + "-" + Guid.NewGuid().ToString("N")[..4];
}
