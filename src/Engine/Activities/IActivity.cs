namespace Pipelines.Engine.Activities;

/// <summary>A unit of work in a workflow. Implement <see cref="Activity{TInput}"/> rather than this.</summary>
public interface IActivity
{
    ActivityDescriptor Descriptor { get; }
    Type InputType { get; }
    Task ExecuteAsync(object input, ActivityContext context);
}

/// <summary>
/// Base class for activities: a typed input record in, files written through <see cref="ActivityContext"/> out.
/// The descriptor comes from <see cref="ActivityAttribute"/>, <see cref="OutputAttribute"/> and the input record.
/// </summary>
public abstract class Activity<TInput> : IActivity where TInput : class
{
    private ActivityDescriptor? _descriptor;

    public ActivityDescriptor Descriptor => _descriptor ??= DescriptorBuilder.Build(GetType(), typeof(TInput));

    public Type InputType => typeof(TInput);

    Task IActivity.ExecuteAsync(object input, ActivityContext context) => ExecuteAsync((TInput)input, context);

    /// <summary>Does the work; writes each output to <see cref="ActivityContext.OutputFile"/>.</summary>
    protected abstract Task ExecuteAsync(TInput input, ActivityContext context);
}
