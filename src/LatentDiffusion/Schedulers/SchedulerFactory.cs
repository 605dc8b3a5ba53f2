using LatentDiffusion.Abstractions;
using LatentDiffusion.Formats;

namespace LatentDiffusion.Schedulers;

/// <summary>
/// Builds a scheduler from a model's scheduler config (null for none: the scheduler's own defaults) and overrides
/// (config keys with values as text), as the reference's <c>X.from_config(config, **overrides)</c> does. Registered with
/// <see cref="SchedulerRegistry.Register"/>.
/// </summary>
public delegate IScheduler SchedulerFactory(JsonConfig? modelSchedulerConfig, IReadOnlyDictionary<string, string>? overrides);
