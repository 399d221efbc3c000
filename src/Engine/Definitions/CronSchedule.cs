using Cronos;

namespace Pipelines.Engine.Definitions;

/// <summary>
/// Checks a trigger's cron schedule with the parser Hangfire uses (Cronos): 5 fields, or 6 with seconds first. A
/// schedule that passes here is one the server's recurring jobs accept, so a saved workflow cannot stop it starting.
/// </summary>
public static class CronSchedule
{
    /// <summary>Null when the schedule parses; otherwise what is wrong, in one line.</summary>
    public static string? Check(string schedule)
    {
        var shown = WorkflowParser.Short(schedule);
        var fields = schedule.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length;
        if (fields is not (5 or 6) || schedule.Length > 200)
        {
            return $"expected a cron expression (5 fields, e.g. \"*/5 * * * *\", or 6 with seconds first), got \"{shown}\"";
        }
        try
        {
            CronExpression.Parse(schedule, fields == 6 ? CronFormat.IncludeSeconds : CronFormat.Standard);
            return null;
        }
        catch (CronFormatException e)
        {
            return $"invalid cron expression \"{shown}\": {e.Message.TrimEnd('.')}";
        }
    }
}
