// Deliberately wrong references for LayerTests.TheRulesCatchAnUpwardAndASidewaysReference; nothing else uses these.
namespace LatentDiffusion.Tests.Architecture.Probe.Formats
{
    internal sealed class ProbeReader
    {
        // Upward: the bottom layer holding a pipeline-layer type.
        public Pipelines.ProbeOptions? Options = null;
    }
}

namespace LatentDiffusion.Tests.Architecture.Probe.UNet
{
    internal sealed class ProbeBlock
    {
        // Sideways, and only inside a method body: one model part building another.
        public int Decode() => new Vae.ProbeDecoder().Channels;
    }
}

namespace LatentDiffusion.Tests.Architecture.Probe.Vae
{
    internal sealed class ProbeDecoder
    {
        public int Channels => 4;
    }
}

namespace LatentDiffusion.Tests.Architecture.Probe.Pipelines
{
    internal sealed class ProbeOptions
    {
        // Downward, allowed.
        public Formats.ProbeReader? Reader = null;
    }
}
