using LatentDiffusion.Training;
using NUnit.Framework;
using TorchSharp.Modules;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Training;

/// <summary>
/// A step whose loss or gradients are NaN or infinite is refused before anything is updated, with a message that names
/// the parameters on both sides of the operation that produced them (what a failing training test needs to say).
/// </summary>
public class NonFiniteStepTests
{
    [Test]
    public void ANaNLossIsRefusedAndLeavesWeightsEmaAndStepCountAsTheyWere()
    {
        using var m = new TinyTrainingModels();
        using var trainer = new DiffusionTrainer(m.Tokenizer, m.TextEncoder, m.UNet, m.Vae, m.Scheduler, new DiffusionTrainingOptions { CaptionDropout = 0 });
        var (images, captions) = TinyTrainingModels.FixedBatch(2);
        using var _ = images;
        using (no_grad()) images[1, 0, 3, 3] = tensor(float.NaN);
        var before = Snapshot(m);
        var emaBefore = trainer.Ema.Shadows.ToDictionary(kv => kv.Key, kv => kv.Value.clone());

        var e = Assert.Throws<InvalidOperationException>(() => trainer.Step(images, captions))!;

        Assert.That(e.Message, Does.Contain("Step 1").And.Contain("loss is NaN").And.Contain("not applied"));
        // A NaN in the batch repeats when the step is recomputed: the batch is the cause, not the machine.
        Assert.That(e.Message, Does.Contain("Recomputed with the same batch, draws and weights, the loss is NaN again").And.Contain("Check the batch"));
        Assert.That(trainer.StepCount, Is.Zero);
        AssertUnchanged(before, Snapshot(m));
        AssertUnchanged(emaBefore, trainer.Ema.Shadows.ToDictionary(kv => kv.Key, kv => kv.Value));
    }

    [TestCase(0.0)]
    [TestCase(1.0)]
    public void NonFiniteGradientsUnderAFiniteLossAreRefusedNamingBothSidesOfTheirSource(double maxGradNorm)
    {
        using var m = new TinyTrainingModels();
        // The infinite gradient reaches every parameter used before this convolution and none used after it.
        InjectInfiniteBackward(m.UNet, UNetConv);
        using var trainer = new DiffusionTrainer(m.Tokenizer, m.TextEncoder, m.UNet, m.Vae, m.Scheduler,
            new DiffusionTrainingOptions { CaptionDropout = 0, MaxGradNorm = maxGradNorm });
        var (images, captions) = TinyTrainingModels.FixedBatch(2);
        using var _ = images;
        var before = Snapshot(m);

        var e = Assert.Throws<InvalidOperationException>(() => trainer.Step(images, captions))!;

        Assert.That(e.Message, Does.Contain("loss").And.Contain("is finite").And.Contain("NaN or infinite gradients"));
        // In the UNet, the convolution's own bias is the last bad parameter and the block's attention after it is finite
        // (so clipping did not spread the bad values before they were counted); the text encoder, used before, is all bad.
        int unet = m.UNet.parameters().Count(), text = m.TextEncoder.parameters().Count();
        Assert.That(e.Message, Does.Match($@"unet: [0-9]+ of {unet} \(the last in its order: unet\.up_blocks\.1\.resnets\.0\.conv2\.weight, unet\.up_blocks\.1\.resnets\.0\.conv2\.bias; the first still finite: unet\.up_blocks\.1\.attentions\.0\.norm\.weight"));
        Assert.That(e.Message, Does.Contain($"text_encoder: {text} of {text} (the last in its order: "));
        // The fault repeats, so the recomputation under anomaly detection names the backward function that first returned
        // NaN: the convolution's, fed the infinite gradient of the square root.
        Assert.That(e.Message, Does.Contain("under autograd's anomaly detection: Function 'ConvolutionBackward0' returned nan values"));
        Assert.That(trainer.StepCount, Is.Zero);
        AssertUnchanged(before, Snapshot(m));
        Assert.That(AnomalyMode.IsEnabled, Is.False, "anomaly detection is switched off again");
    }

    [Test]
    public void AFaultThatDoesNotRepeatIsReportedAsOneOfTheComputationNotOfTheDataAndTheStepCanBeRetaken()
    {
        using var m = new TinyTrainingModels();
        // Only the first forward pass gets the infinite backward gradient: what a flaky kernel or a memory fault looks like.
        int calls = 0;
        InjectInfiniteBackward(m.UNet, UNetConv, when: () => calls++ == 0);
        using var trainer = new DiffusionTrainer(m.Tokenizer, m.TextEncoder, m.UNet, m.Vae, m.Scheduler, new DiffusionTrainingOptions { CaptionDropout = 0 });
        var (images, captions) = TinyTrainingModels.FixedBatch(2);
        using var _ = images;
        var before = Snapshot(m);

        var e = Assert.Throws<InvalidOperationException>(() => trainer.Step(images, captions))!;

        Assert.That(e.Message, Does.Contain("NaN or infinite gradients")
            .And.Contain("Recomputed with the same batch, draws and weights, the gradients are finite, so the fault did not repeat: " +
                          "neither the batch nor the weights caused it"));
        Assert.That(calls, Is.EqualTo(2), "the step was computed once more, not more");
        Assert.That(trainer.StepCount, Is.Zero);
        AssertUnchanged(before, Snapshot(m));

        // Nothing of the refused step is left behind: taking it again gives what an untouched trainer gives.
        float retaken = trainer.Step(images, captions);
        using var fresh = new TinyTrainingModels();
        using var freshTrainer = new DiffusionTrainer(fresh.Tokenizer, fresh.TextEncoder, fresh.UNet, fresh.Vae, fresh.Scheduler, new DiffusionTrainingOptions { CaptionDropout = 0 });
        Assert.That(retaken, Is.EqualTo(freshTrainer.Step(images, captions)));
        AssertUnchanged(Snapshot(fresh), Snapshot(m));
    }

    [Test]
    public void TheAutoencoderTrainerDiagnosesARefusedStepToo()
    {
        using var m = new TinyTrainingModels();
        // A resnet convolution of the decoder (the blocks call their layers through the hooks).
        InjectInfiniteBackward(m.Vae, name => name.StartsWith("decoder.") && name.EndsWith(".resnets.0.conv2"));
        using var trainer = new AutoencoderTrainer(m.Vae, new AutoencoderTrainingOptions());
        var (images, _) = TinyTrainingModels.FixedBatch(2);
        using var __ = images;

        var e = Assert.Throws<InvalidOperationException>(() => trainer.Step(images))!;

        Assert.That(e.Message, Does.Contain("NaN or infinite gradients").And.Contain("under autograd's anomaly detection: Function '"));
        Assert.That(trainer.StepCount, Is.Zero);
    }

    private static bool UNetConv(string name) => name == "up_blocks.1.resnets.0.conv2";

    /// <summary>
    /// Adds sqrt(0) to the output of the first convolution of <paramref name="model"/> whose name <paramref name="isTarget"/>
    /// accepts (on the calls <paramref name="when"/> lets through, default all): the forward pass is unchanged, the backward
    /// pass gets an infinite gradient there (d sqrt(z)/dz at 0).
    /// </summary>
    private static void InjectInfiniteBackward(nn.Module model, Func<string, bool> isTarget, Func<bool>? when = null)
    {
        var conv = (Conv2d)model.named_modules().First(x => isTarget(x.name)).module;
        conv.register_forward_hook((_, _, output) => when?.Invoke() ?? true ? output + (output - output.detach()).sqrt() : output);
    }

    private static Dictionary<string, Tensor> Snapshot(TinyTrainingModels m)
        => m.UNet.named_parameters().Select(p => ("unet." + p.name, p.parameter))
            .Concat(m.TextEncoder.named_parameters().Select(p => ("text_encoder." + p.name, p.parameter)))
            .ToDictionary(p => p.Item1, p => p.Item2.detach().clone());

    private static void AssertUnchanged(Dictionary<string, Tensor> before, Dictionary<string, Tensor> after)
    {
        var changed = before.Where(kv => !kv.Value.equal(after[kv.Key]).all().item<bool>()).Select(kv => kv.Key).ToList();
        Assert.That(changed, Is.Empty);
    }
}
