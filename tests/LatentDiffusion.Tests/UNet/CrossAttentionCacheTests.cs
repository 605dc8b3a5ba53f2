using LatentDiffusion.Abstractions;
using LatentDiffusion.Tests.Pipelines;
using LatentDiffusion.UNet;
using NUnit.Framework;
using TorchSharp;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.UNet;

/// <summary>The cross-attention cache is passed explicitly: only the calls given it use it, and it changes no number.</summary>
public class CrossAttentionCacheTests
{
    private static UNet2DConditionModel Unet => (UNet2DConditionModel)TinyModels.Get("tiny-sd15").UNet;

    [Test]
    public void ACacheHoldsOneProjectionPerCrossAttentionLayerAndChangesNothing()
    {
        var unet = Unet;
        using var scope = NewDisposeScope();
        using var generator = new TorchSharp.torch.Generator(5);
        var sample = randn([2, 4, 8, 12], generator: generator);
        var context = randn([2, 77, unet.CrossAttentionDim], generator: generator);
        var t = tensor(500f);
        var plain = unet.Forward(sample, t, context);
        using var cache = new CrossAttentionCache();
        var first = unet.Forward(sample, t, context, null, cache, CancellationToken.None);
        int layers = cache.Count;
        // tiny-sd15: 3 cross-attention down blocks and 3 up blocks (2 and 3 transformers), the mid block's one.
        Assert.That(layers, Is.EqualTo(3 * 2 + 3 * 3 + 1));
        var second = unet.Forward(sample, tensor(20f), context, null, cache, CancellationToken.None);
        Assert.That(cache.Count, Is.EqualTo(layers), "the same context was projected again");
        Assert.That(first.eq(plain).all().item<bool>(), Is.True, "a cached forward pass differs from a plain one");
        var plainSecond = unet.Forward(sample, tensor(20f), context);
        Assert.That(second.eq(plainSecond).all().item<bool>(), Is.True, "reused projections differ from fresh ones");
    }

    [Test]
    public void CallsWithoutTheCacheDoNotFillIt()
    {
        var unet = Unet;
        using var scope = NewDisposeScope();
        var sample = zeros(1, 4, 8, 8);
        var context = ones(1, 77, unet.CrossAttentionDim);
        using var cache = new CrossAttentionCache();
        unet.Forward(sample, tensor(1f), context);
        ((IUNet)unet).Forward(sample, tensor(1f), context, CancellationToken.None);
        Assert.That(cache.Count, Is.Zero);
    }

    [Test]
    public void ADisposedCacheReleasesItsTensorsAndRefusesUse()
    {
        var unet = Unet;
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        var cache = new CrossAttentionCache();
        using (var scope = NewDisposeScope())
        {
            var context = ones(1, 77, unet.CrossAttentionDim);
            unet.Forward(zeros(1, 4, 8, 8), tensor(1f), context, null, cache, CancellationToken.None);
        }
        Assert.That(cache.Count, Is.GreaterThan(0));
        cache.Dispose();
        Assert.That(DisposeScopeManager.Statistics.ThreadTotalLiveCount, Is.EqualTo(before), "the cache kept tensors alive after disposal");
        Assert.Throws<ObjectDisposedException>(() => cache.GetOrAdd(this, ones(1), c => (c, c)));
    }
}
