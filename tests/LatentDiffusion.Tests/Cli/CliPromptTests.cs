using System.Text.Json;
using LatentDiffusion.Cli;
using LatentDiffusion.Tests.Pipelines;
using NUnit.Framework;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests.Cli;

/// <summary><c>ldm generate --embedding</c>, <c>--prompt-syntax</c> and <c>--truncate-prompt</c>.</summary>
public class CliPromptTests
{
    private string _dir = "";

    [SetUp]
    public void CreateDirectory() => _dir = Directory.CreateTempSubdirectory("ldm-prompt-").FullName;

    [TearDown]
    public void DeleteDirectory() => Directory.Delete(_dir, recursive: true);

    private static Tensor Pixels(string png)
    {
        using var image = Image.Load<Rgb24>(png);
        var bytes = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(bytes);
        return tensor(bytes.Select(b => (float)b).ToArray(), new long[] { 1, image.Height, image.Width, 3 }) / 255f;
    }

    [Test]
    public async Task EmbeddingsAreLoadedWithTheirTokensAndMatchTheReference()
    {
        var c = Fixtures.Phase2Cases.Single(x => x.TryGetProperty("key", out var k) && k.GetString() == "ti/sd15/txt2img/18");
        var call = c.GetProperty("call");
        string output = Path.Combine(_dir, "ti.png");
        var (code, _, err) = await CliTests.Run("generate", "--model", Fixtures.PathOf("tiny-sd15"), "--prompt", call.GetProperty("prompt").GetString()!,
            "--embedding", Fixtures.PathOf("textual_inversion", "my-token") + ":<my-token>",
            "--embedding", Fixtures.PathOf("textual_inversion", "my-style.safetensors") + ":<my-style>",
            "--steps", call.GetProperty("num_inference_steps").GetInt32().ToString(), "--guidance", "7.5", "--seed", c.GetProperty("seed").GetInt64().ToString(),
            "--width", "128", "--height", "128", "--output", output);
        Assert.That(code, Is.EqualTo(0), err);
        using var actual = Pixels(output);
        using var expected = Fixtures.ExpectedPhase2("ti/sd15/txt2img/18/image");
        AssertTensor.MaxAbsClose(actual, expected, 1.0 / 255 + 2e-3, "ti/sd15/txt2img/18 as PNG");
    }

    [Test]
    public async Task AMissingEmbeddingIsAnErrorBeforeTheModelLoads()
    {
        var (code, _, err) = await CliTests.Run("generate", "--model", Path.Combine(_dir, "no-model"), "--prompt", "a cat",
            "--embedding", Path.Combine(_dir, "nothing.safetensors"), "--output", Path.Combine(_dir, "x.png"));
        Assert.That(code, Is.Not.EqualTo(0));
        Assert.That(err, Does.Contain("--embedding").And.Contain("does not exist"));
    }

    [Test]
    public async Task PromptSyntaxAndTruncationReachThePipeline()
    {
        string Out(string name) => Path.Combine(_dir, name + ".png");
        string[] common = ["--model", GeneratedModel.Folder, "--steps", "1", "--width", "64", "--height", "64", "--seed", "4"];
        async Task Generate(string name, string prompt, params string[] extra)
        {
            var (code, _, err) = await CliTests.Run(["generate", .. common, "--prompt", prompt, "--output", Out(name), .. extra]);
            Assert.That(code, Is.EqualTo(0), err);
        }
        await Generate("weighted", "a (red:1.6) circle");
        await Generate("literal", "a (red:1.6) circle", "--prompt-syntax", "none");
        await Generate("plain", "a red circle");
        using var weighted = Pixels(Out("weighted"));
        using var literal = Pixels(Out("literal"));
        using var plain = Pixels(Out("plain"));
        Assert.That((weighted - literal).abs().max().item<float>(), Is.GreaterThan(0), "none reads the brackets as text");
        Assert.That((weighted - plain).abs().max().item<float>(), Is.GreaterThan(0), "a1111 weighs the word");

        string longPrompt = "a red circle" + string.Concat(Enumerable.Repeat(", a blue square", 30));
        await Generate("long", longPrompt);
        await Generate("cut", longPrompt, "--truncate-prompt");
        using var chunked = Pixels(Out("long"));
        using var cut = Pixels(Out("cut"));
        Assert.That((chunked - cut).abs().max().item<float>(), Is.GreaterThan(0), "--truncate-prompt cuts the prompt");

        var (bad, _, badErr) = await CliTests.Run(["generate", .. common, "--prompt", "a", "--output", Out("bad"), "--prompt-syntax", "compel"]);
        Assert.That(bad, Is.Not.EqualTo(0));
        Assert.That(badErr, Does.Contain("--prompt-syntax must be a1111 or none"));
    }

    [TestCase("emb.safetensors", "emb.safetensors", null)]
    [TestCase("emb.safetensors:<tok>", "emb.safetensors", "<tok>")]
    [TestCase("dir/emb.safetensors:name", "dir/emb.safetensors", "name")]
    [TestCase("C:\\models\\emb.safetensors", "C:\\models\\emb.safetensors", null)]
    [TestCase("C:\\models\\emb.safetensors:tok", "C:\\models\\emb.safetensors", "tok")]
    public void FileAndTokenAreSplitAtTheLastColon(string value, string path, string? token)
        => Assert.That(PromptArguments.Split(value), Is.EqualTo((path, token)));
}
