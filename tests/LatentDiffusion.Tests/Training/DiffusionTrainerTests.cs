using System.Diagnostics;
using LatentDiffusion.Pipelines;
using LatentDiffusion.Shapes;
using LatentDiffusion.Training;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Training;

public class DiffusionTrainerTests
{
    private static DiffusionTrainer Trainer(TinyTrainingModels m, DiffusionTrainingOptions options)
        => new(m.Tokenizer, m.TextEncoder, m.UNet, m.Vae, m.Scheduler, options);

    [Test]
    public void OneStepGivesFiniteNonZeroGradientsToEveryTrainedParameter()
    {
        using var m = new TinyTrainingModels();
        using var trainer = Trainer(m, new DiffusionTrainingOptions { MaxGradNorm = 0, CaptionDropout = 0 });
        var (images, captions) = TinyTrainingModels.FixedBatch(4);
        using var _ = images;
        float loss = trainer.Step(images, captions);
        Assert.That(float.IsFinite(loss) && loss > 0, Is.True, $"loss {loss}");
        var missing = new List<string>();
        foreach (var (name, p) in m.UNet.named_parameters().Select(p => ("unet." + p.name, p.parameter))
                     .Concat(m.TextEncoder.named_parameters().Select(p => ("text_encoder." + p.name, p.parameter))))
        {
            var g = p.grad;
            if (g is null) { missing.Add(name + " (no grad)"); continue; }
            double norm = g.abs().sum().item<float>();
            if (!double.IsFinite(norm) || norm == 0) missing.Add($"{name} ({norm})");
        }
        Assert.That(missing, Is.Empty);
        Assert.That(m.Vae.parameters().All(p => !p.requires_grad), Is.True, "the VAE stays frozen");
    }

    [Test]
    public void LossDecreasesWhenOverfittingAFixedBatch()
    {
        using var m = new TinyTrainingModels();
        using var trainer = Trainer(m, new DiffusionTrainingOptions { LearningRate = 2e-3, WarmupSteps = 5, CaptionDropout = 0, Seed = 5 });
        var (images, captions) = TinyTrainingModels.FixedBatch(8);
        using var _ = images;
        var losses = new List<float>();
        var clock = Stopwatch.StartNew();
        trainer.Train(40, _ => (images, captions), new Progress(losses));
        TestContext.Out.WriteLine($"40 steps in {clock.Elapsed.TotalSeconds:F1} s; losses {string.Join(", ", losses.Select(l => l.ToString("F3")))}");
        Assert.That(trainer.StepCount, Is.EqualTo(40));
        Assert.That(losses.Skip(30).Average(), Is.LessThan(0.75 * losses.Take(5).Average()));
        Assert.That(images.IsInvalid, Is.False, "a batch made before Train is not released by it");
    }

    private sealed class Progress(List<float> losses) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => losses.Add(value.Loss);
    }

    [Test]
    public void StepOnAnEncodedPosteriorEqualsStepOnTheImages()
    {
        var options = new DiffusionTrainingOptions { Seed = 5 };
        var (images, captions) = TinyTrainingModels.FixedBatch(4);
        using var _ = images;
        using var a = new TinyTrainingModels();
        using var b = new TinyTrainingModels();
        using var ta = Trainer(a, options);
        using var tb = Trainer(b, options);
        float fromImages = ta.Step(images, captions);
        using var posterior = b.Vae.Encode(images);
        float fromPosterior = tb.Step(posterior.Mean, posterior.Std, captions);
        Assert.That(fromPosterior, Is.EqualTo(fromImages));
        foreach (var ((name, pa), (_, pb)) in a.UNet.named_parameters().Zip(b.UNet.named_parameters()))
            Assert.That(pa.allclose(pb, rtol: 0, atol: 1e-6), Is.True, name);
    }

    [Test]
    public void EmaUpdateIsDecayTimesShadowPlusOneMinusDecayTimesParameter()
    {
        using var p = new TorchSharp.Modules.Parameter(tensor(new[] { 1f, 2f, 3f }));
        using var ema = new ExponentialMovingAverage([("p", p)]);
        using (no_grad()) p.copy_(tensor(new[] { 3f, 0f, -1f }));
        ema.Update(0.9);
        var shadow = ema.Shadows["p"].data<float>().ToArray();
        Assert.That(shadow, Is.EqualTo(new[] { 0.9f * 1 + 0.1f * 3, 0.9f * 2, 0.9f * 3 - 0.1f }).Within(1e-6));

        // In the trainer: after the first step shadow = d·initial + (1 − d)·param with d = DecayAt(EmaDecay, 0).
        using var m = new TinyTrainingModels();
        var name = m.UNet.named_parameters().First().name;
        using var initial = m.UNet.named_parameters().First().parameter.detach().clone();
        using var trainer = Trainer(m, new DiffusionTrainingOptions { LearningRate = 1e-2 });
        var (images, captions) = TinyTrainingModels.FixedBatch(2);
        using var _ = images;
        trainer.Step(images, captions);
        double d = ExponentialMovingAverage.DecayAt(0.999, 0);
        using var expected = d * initial + (1 - d) * m.UNet.named_parameters().First().parameter.detach();
        Assert.That(trainer.Ema.Shadows["unet." + name].allclose(expected, rtol: 1e-5, atol: 1e-7), Is.True);
        Assert.That(ExponentialMovingAverage.DecayAt(0.999, 100000), Is.EqualTo(0.999));
    }

    [Test]
    public void CaptionDropoutRateIsCloseToItsProbability()
    {
        using var g = new Generator(42);
        int dropped = DiffusionTrainer.CaptionDropMask(g, 1000, 0.1).Count(d => d);
        Assert.That(dropped, Is.InRange(70, 130));
        using var g2 = new Generator(42);
        Assert.That(DiffusionTrainer.CaptionDropMask(g2, 1000, 0.1).Count(d => d), Is.EqualTo(dropped), "seeded: the same draws");
    }

    [Test]
    public void HighNoiseFractionMovesThatShareOfTimestepsToTheHighRange()
    {
        using var g0 = new Generator(5);
        using var uniform = DiffusionTrainer.SampleTimesteps(g0, 4000, 1000, 0.0, 800);
        using var g1 = new Generator(5);
        using var plain = randint(0, 1000, [4000], ScalarType.Int64, CPU, generator: g1);
        Assert.That(uniform.equal(plain).all().item<bool>(), Is.True, "fraction 0: exactly the uniform draws, nothing more");

        using var g2 = new Generator(5);
        using var all = DiffusionTrainer.SampleTimesteps(g2, 4000, 1000, 1.0, 800);
        Assert.That(all.min().item<long>(), Is.GreaterThanOrEqualTo(800));
        Assert.That(all.max().item<long>(), Is.LessThan(1000));

        // Half the batch moved: 0.5 + 0.5 * 0.2 of the timesteps land at 800 or above.
        using var g3 = new Generator(5);
        using var half = DiffusionTrainer.SampleTimesteps(g3, 4000, 1000, 0.5, 800);
        double share = (half >= 800).to(ScalarType.Float32).mean().item<float>();
        Assert.That(share, Is.InRange(0.57, 0.63));
        Assert.That(half.min().item<long>(), Is.LessThan(100), "the rest still covers the whole range");
    }

    [Test]
    public void HighNoiseOptionsAreValidated()
    {
        using var m = new TinyTrainingModels();
        Assert.Throws<ArgumentOutOfRangeException>(() => Trainer(m, new DiffusionTrainingOptions { HighNoiseFraction = 1.5 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Trainer(m, new DiffusionTrainingOptions { HighNoiseFraction = 0.5, HighNoiseFrom = 1000 }));
    }

    [Test]
    public void ResumingFromACheckpointContinuesExactlyAsAStraightRun()
    {
        var options = new DiffusionTrainingOptions { LearningRate = 1e-3, WarmupSteps = 3, Seed = 11 };
        var (images, captions) = TinyTrainingModels.FixedBatch(4);
        using var _ = images;
        string dir = Path.Combine(Path.GetTempPath(), "ld-ckpt-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var straight = new TinyTrainingModels();
            using var a = Trainer(straight, options);
            a.Train(3, _ => (images, captions));
            a.SaveCheckpoint(dir);
            a.Train(5, _ => (images, captions));

            using var resumedModels = new TinyTrainingModels(seed: 99); // other weights: the checkpoint must replace them
            using var b = DiffusionTrainer.Resume(dir, resumedModels.Tokenizer, resumedModels.TextEncoder, resumedModels.UNet, resumedModels.Vae, resumedModels.Scheduler, options);
            Assert.That(b.StepCount, Is.EqualTo(3));
            ModelInitializerCopyVae(straight, resumedModels);
            b.Train(5, _ => (images, captions));

            foreach (var ((name, pa), (_, pb)) in straight.UNet.named_parameters().Zip(resumedModels.UNet.named_parameters())
                         .Concat(straight.TextEncoder.named_parameters().Zip(resumedModels.TextEncoder.named_parameters())))
                Assert.That(pa.allclose(pb, rtol: 0, atol: 1e-6), Is.True, name);
            foreach (var (key, shadow) in a.Ema.Shadows)
                Assert.That(shadow.allclose(b.Ema.Shadows[key], rtol: 0, atol: 1e-6), Is.True, "ema " + key);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }

    // The VAE is frozen and not in the checkpoint: a resumed run must be given the same one.
    private static void ModelInitializerCopyVae(TinyTrainingModels from, TinyTrainingModels to)
    {
        using var noGrad = no_grad();
        foreach (var ((_, a), (_, b)) in from.Vae.named_parameters().Zip(to.Vae.named_parameters())) b.copy_(a);
    }

    [Test]
    public async Task ATrainedAndSavedModelLoadsAndGenerates()
    {
        using var m = new TinyTrainingModels();
        using var trainer = Trainer(m, new DiffusionTrainingOptions { LearningRate = 1e-3, WarmupSteps = 0 });
        trainer.Train(3, step =>
        {
            var batch = ShapesDataset.Batch(seed: 1, step, batchSize: 4, imageSize: 32);
            return (batch.Images, batch.Captions);
        });
        trainer.ApplyEma();
        string dir = Path.Combine(Path.GetTempPath(), "ld-trained-" + Guid.NewGuid().ToString("N"));
        try
        {
            DiffusersPipelineWriter.Save(dir, TinyTrainingModels.TokenizerDir, m.TextEncoder, m.UNet, m.Vae, m.Scheduler.Config, ScalarType.Float32);
            using var pipeline = await StableDiffusionPipeline.LoadAsync(dir);
            Assert.That(pipeline.DefaultImageSize, Is.EqualTo(32));
            using var result = pipeline.Generate("a red circle", new GenerationOptions { Steps = 3, Seed = 2 });
            Assert.That(result.Images, Has.Count.EqualTo(1));
            Assert.That(result.Images[0].Width, Is.EqualTo(32));

            // The reloaded UNet computes what the trained one does.
            using var noise = randn(1, 4, 16, 16);
            using var t = tensor(500f);
            using var ctx = m.TextEncoder.Encode(tensor(m.Tokenizer.EncodePadded("a red circle", 16).Ids.Select(i => (long)i).ToArray()).unsqueeze(0));
            using var expected = m.UNet.Forward(noise, t, ctx);
            using var actual = pipeline.UNet.Forward(noise, t, ctx);
            Assert.That(actual.allclose(expected, rtol: 0, atol: 1e-6), Is.True);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }
}

public class DiffusionTrainerTiming
{
    [Test, Explicit("timing only: UNet [64, 128], one layer per block, 16x16 latents, batch 32")]
    public void MeasureStepTime()
    {
        using var m = new TinyTrainingModels(unetChannels: [64, 128]);
        using var trainer = new DiffusionTrainer(m.Tokenizer, m.TextEncoder, m.UNet, m.Vae, m.Scheduler, new DiffusionTrainingOptions());
        using var batch = ShapesDataset.Batch(seed: 1, step: 0, batchSize: 32, imageSize: 32);
        trainer.Step(batch.Images, batch.Captions);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        const int steps = 3;
        for (int i = 0; i < steps; i++) trainer.Step(batch.Images, batch.Captions);
        TestContext.Out.WriteLine($"step time: {clock.Elapsed.TotalMilliseconds / steps:F0} ms (torch threads {TorchSharp.torch.get_num_threads()})");
    }
}
