namespace LatentDiffusion.Adapters;

/// <summary>A loaded LoRA, by name, and the scale a generation applies it with (0 leaves it out).</summary>
/// <param name="Name">The name it was loaded under (<see cref="LoraAdapter.Name"/>).</param>
/// <param name="Scale">Multiplies its update: scale · alpha / rank · up(down(x)). Usually 0 to 1; 1 is the full LoRA.</param>
public sealed record LoraWeight(string Name, double Scale = 1.0);
