using FluentValidation;
using Microsoft.Extensions.DependencyInjection;

namespace Pipelines.Engine.Activities;

/// <summary>All registered activities, by type name, with their input validators.</summary>
public sealed class ActivityRegistry
{
    private readonly Dictionary<string, IActivity> _activities;
    private readonly IServiceProvider _services;

    public ActivityRegistry(IEnumerable<IActivity> activities, IServiceProvider services)
    {
        _services = services;
        _activities = new Dictionary<string, IActivity>(StringComparer.Ordinal);
        foreach (var activity in activities)
        {
            if (!_activities.TryAdd(activity.Descriptor.Type, activity))
            {
                throw new InvalidOperationException($"activity type {activity.Descriptor.Type} registered twice");
            }
        }
    }

    public IReadOnlyCollection<IActivity> All => _activities.Values.OrderBy(a => a.Descriptor.Category).ThenBy(a => a.Descriptor.Type).ToList();

    public IActivity? Find(string type) => _activities.GetValueOrDefault(type);

    /// <summary>The validator registered for the activity's input record, if any.</summary>
    public IValidator? ValidatorFor(IActivity activity) =>
        _services.GetService(typeof(IValidator<>).MakeGenericType(activity.InputType)) as IValidator;

    public IServiceProvider Services => _services;
}

/// <summary>DI registration for activities.</summary>
public static class ActivityServiceCollectionExtensions
{
    /// <summary>Registers an activity and the nested FluentValidation validator of its input record, if it has one.</summary>
    public static IServiceCollection AddActivity<TActivity>(this IServiceCollection services) where TActivity : class, IActivity
    {
        services.AddSingleton<TActivity>();
        services.AddSingleton<IActivity>(sp => sp.GetRequiredService<TActivity>());
        var inputType = typeof(TActivity).BaseType?.GetGenericArguments().FirstOrDefault();
        if (inputType is not null)
        {
            var validatorInterface = typeof(IValidator<>).MakeGenericType(inputType);
            var validator = typeof(TActivity).GetNestedTypes().Concat(inputType.GetNestedTypes())
                .FirstOrDefault(t => !t.IsAbstract && validatorInterface.IsAssignableFrom(t));
            if (validator is not null)
            {
                services.AddSingleton(validatorInterface, validator);
            }
        }
        return services;
    }

    /// <summary>Registers the registry itself; call after the activities.</summary>
    public static IServiceCollection AddActivityRegistry(this IServiceCollection services)
    {
        services.AddSingleton<ActivityRegistry>();
        return services;
    }
}
