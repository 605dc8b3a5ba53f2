using LatentDiffusion.Training;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Training;

public class AutoencoderTrainerTests
{
    [Test]
    public void ReconstructionLossDecreasesAndEveryParameterGetsAGradient()
    {
        using var m = new TinyTrainingModels();
        using var trainer = new AutoencoderTrainer(m.Vae, new AutoencoderTrainingOptions { LearningRate = 2e-3, WarmupSteps = 3, KlWeight = 1e-4, L1Weight = 0.1, MaxGradNorm = 0 });
        var (images, _) = TinyTrainingModels.FixedBatch(4);
        using var _ = images;
        var losses = new List<float>();
        for (int i = 0; i < 30; i++)
        {
            losses.Add(trainer.Step(images));
            if (i == 0)
            {
                var missing = m.Vae.named_parameters().Where(p => { var g = p.parameter.grad; return g is null || !(g.abs().sum().item<float>() > 0); }).Select(p => p.name).ToList();
                Assert.That(missing, Is.Empty, "parameters without a gradient");
            }
        }
        TestContext.Out.WriteLine(string.Join(", ", losses.Select(l => l.ToString("F4"))));
        Assert.That(losses.Skip(25).Average(), Is.LessThan(0.6 * losses.Take(3).Average()));
        Assert.That(m.Vae.training, Is.False, "back in eval mode after a step");
    }

    [Test]
    public void ResumesExactly()
    {
        var options = new AutoencoderTrainingOptions { LearningRate = 1e-3, WarmupSteps = 2, Seed = 4 };
        var (images, _) = TinyTrainingModels.FixedBatch(2);
        using var _ = images;
        string dir = Path.Combine(Path.GetTempPath(), "ld-vae-ckpt-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var a = new TinyTrainingModels();
            using var ta = new AutoencoderTrainer(a.Vae, options);
            ta.Train(2, _ => images);
            ta.SaveCheckpoint(dir);
            ta.Train(4, _ => images);

            using var b = new TinyTrainingModels(seed: 50);
            using var tb = new AutoencoderTrainer(b.Vae, options);
            tb.LoadCheckpoint(dir);
            tb.Train(4, _ => images);
            foreach (var ((name, pa), (_, pb)) in a.Vae.named_parameters().Zip(b.Vae.named_parameters()))
                Assert.That(pa.allclose(pb, rtol: 0, atol: 1e-6), Is.True, name);
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }
}
