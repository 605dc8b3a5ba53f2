using LatentDiffusion.Runtime;
using NUnit.Framework;

namespace LatentDiffusion.Tests;

[SetUpFixture]
public sealed class TestSetup
{
    [OneTimeSetUp]
    public void LoadTorch() => TorchRuntime.EnsureInitialized();
}
