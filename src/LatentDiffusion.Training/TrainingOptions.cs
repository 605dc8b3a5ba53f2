namespace LatentDiffusion.Training;

/// <summary>The optimiser and randomness settings every trainer shares (AdamW with linear warm-up and gradient clipping).</summary>
public abstract record TrainingOptions
{
    /// <summary>AdamW's learning rate after the warm-up.</summary>
    public double LearningRate { get; init; } = 1e-4;

    /// <summary>Steps over which the learning rate rises linearly from LearningRate/WarmupSteps to LearningRate (0: none).</summary>
    public int WarmupSteps { get; init; } = 100;

    /// <summary>AdamW's decoupled weight decay.</summary>
    public double WeightDecay { get; init; } = 1e-2;

    /// <summary>The total gradient norm is clipped to this (0 or less: no clipping).</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>Use a sample of the VAE posterior (as the reference trainers do); false: its mean.</summary>
    public bool SampleLatents { get; init; } = true;

    /// <summary>Seed of every random draw; each step draws from a generator seeded by (seed, step), so runs reproduce and resume exactly.</summary>
    public long Seed { get; init; }
}
