using LatentDiffusion.Pipelines;
using NUnit.Framework;

namespace LatentDiffusion.Tests.Architecture;

public class LayerTests
{
    private static readonly System.Reflection.Assembly Library = typeof(StableDiffusionPipeline).Assembly;

    [Test]
    public void NoLayerUsesOneAboveItOrBesideIt()
    {
        var violations = Layers.Violations(Library, "LatentDiffusion", Layers.MayUse);
        Assert.That(violations, Is.Empty, string.Join(Environment.NewLine, violations));
    }

    [Test]
    public void EveryNamespaceOfTheLibraryIsALayer()
    {
        // A new folder must take a place in the table, or the rules above would not see it; and the training kit
        // (LatentDiffusion.Training, the shapes tool library) stays out of the library.
        var namespaces = Layers.TopNamespaces(Library, "LatentDiffusion");
        Assert.That(namespaces, Is.SubsetOf(Layers.MayUse.Keys));
        Assert.That(Library.GetReferencedAssemblies().Select(a => a.Name), Has.None.StartsWith("LatentDiffusion"));
    }

    [Test]
    public void TheRulesCatchAnUpwardAndASidewaysReference()
    {
        // The probe namespaces (LayerProbe.cs) mirror the layers: Formats holds a field of a Pipelines type, UNet
        // news up a Vae type inside a method body, and Pipelines uses Formats (allowed).
        const string root = "LatentDiffusion.Tests.Architecture.Probe";
        var violations = Layers.Violations(typeof(LayerTests).Assembly, root, Layers.MayUse);
        Assert.That(violations, Has.Count.EqualTo(2), string.Join(Environment.NewLine, violations));
        Assert.That(violations, Has.One.StartsWith($"Formats: {root}.Formats.ProbeReader"));
        Assert.That(violations, Has.One.StartsWith($"UNet: {root}.UNet.ProbeBlock"));
    }
}
