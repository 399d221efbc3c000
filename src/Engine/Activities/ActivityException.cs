namespace Pipelines.Engine.Activities;

/// <summary>
/// An expected failure of an activity (bad data, an unusable input): its message is shown to the user as is,
/// without a stack trace.
/// </summary>
public sealed class ActivityException(string message, Exception? inner = null) : Exception(message, inner);
