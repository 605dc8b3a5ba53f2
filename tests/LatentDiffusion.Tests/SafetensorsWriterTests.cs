using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using LatentDiffusion.Formats;
using NUnit.Framework;
using static TorchSharp.torch;

namespace LatentDiffusion.Tests;

public class SafetensorsWriterTests
{
    [Test]
    public void RoundTripsEveryDtypeWithAlignedSortedHeader()
    {
        string path = Path.Combine(Path.GetTempPath(), $"ld-writer-{Guid.NewGuid():N}.safetensors");
        using var scope = NewDisposeScope();
        var tensors = new Dictionary<string, Tensor>
        {
            ["b.f32"] = randn(3, 5),
            ["a.f16"] = randn(7).to(ScalarType.Float16),
            ["c.bf16"] = randn(2, 3).to(ScalarType.BFloat16),
            ["d.i64"] = arange(0, 11, dtype: ScalarType.Int64).reshape(1, 11),
            ["e.bool"] = tensor(new[] { true, false, true }),
            ["f.u8"] = tensor(new byte[] { 1, 2, 255 }),
            ["g.f64"] = randn(2).to(ScalarType.Float64),
            ["h.i32"] = tensor(new[] { -1, 5 }),
            ["i.empty"] = zeros(0, 4),
            ["j.scalar"] = tensor(3.5f),
            ["k.strided"] = randn(4, 6).t(),
        };
        try
        {
            SafetensorsWriter.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt", ["note"] = "x\"y" });

            byte[] bytes = File.ReadAllBytes(path);
            ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            Assert.That(n % 8, Is.EqualTo(0UL), "header length is a multiple of 8");
            string header = Encoding.UTF8.GetString(bytes, 8, (int)n);
            Assert.That(header.TrimEnd(' ').Length, Is.GreaterThan(0));
            Assert.That(header[header.TrimEnd(' ').Length..], Does.Match("^ *$"), "header padded with spaces");
            using var doc = JsonDocument.Parse(header);
            var keys = doc.RootElement.EnumerateObject().Select(p => p.Name).ToList();
            Assert.That(keys[0], Is.EqualTo("__metadata__"));
            Assert.That(keys.Skip(1), Is.EqualTo(tensors.Keys.OrderBy(k => k, StringComparer.Ordinal)));
            foreach (var p in doc.RootElement.EnumerateObject().Skip(1))
            {
                long begin = p.Value.GetProperty("data_offsets")[0].GetInt64();
                long size = tensors[p.Name].ElementSize;
                Assert.That(begin % size, Is.EqualTo(0), $"{p.Name} aligned to its element size");
            }

            using var file = SafetensorsFile.Open(path);
            Assert.That(file.Metadata["note"], Is.EqualTo("x\"y"));
            Assert.That(file.Entries["a.f16"].DType, Is.EqualTo("F16"));
            Assert.That(file.Entries["c.bf16"].DType, Is.EqualTo("BF16"));
            Assert.That(file.Entries["d.i64"].DType, Is.EqualTo("I64"));
            Assert.That(file.Entries["e.bool"].DType, Is.EqualTo("BOOL"));
            foreach (var (name, expected) in tensors)
            {
                var actual = file.Load(name);
                Assert.That(actual.dtype, Is.EqualTo(expected.dtype), name);
                Assert.That(actual.shape, Is.EqualTo(expected.shape), name);
                Assert.That(actual.equal(expected).all().item<bool>(), Is.True, name);
            }
        }
        finally { File.Delete(path); }
        Assert.That(Directory.GetFiles(Path.GetTempPath(), $".ld-writer-*.tmp"), Is.Empty, "no temporary file left");
    }

    [Test]
    public void OverwritesAndRefusesBadNames()
    {
        string path = Path.Combine(Path.GetTempPath(), $"ld-writer-{Guid.NewGuid():N}.safetensors");
        using var scope = NewDisposeScope();
        try
        {
            SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["x"] = ones(100) });
            SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["y"] = ones(2) });
            using (var file = SafetensorsFile.Open(path)) Assert.That(file.Entries.Keys, Is.EqualTo(new[] { "y" }));
            Assert.Throws<ArgumentException>(() => SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["__metadata__"] = ones(1) }));
            Assert.Throws<ArgumentException>(() => SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { [""] = ones(1) }));
            Assert.Throws<NotSupportedException>(() => SafetensorsWriter.Save(path, new Dictionary<string, Tensor> { ["c"] = ones(1, dtype: ScalarType.ComplexFloat32) }));
        }
        finally { File.Delete(path); }
    }
}
