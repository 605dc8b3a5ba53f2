using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;

namespace LatentDiffusion.Tests.Loading;

/// <summary>A minimal safetensors writer for building synthetic test files (test-only on purpose).</summary>
internal static class TestSafetensorsWriter
{
    /// <summary>One tensor to write: raw little-endian bytes of the given dtype and shape.</summary>
    internal sealed record Tensor(string Name, string DType, long[] Shape, byte[] Data);

    /// <summary>A float32 tensor.</summary>
    internal static Tensor F32(string name, long[] shape, float[] values)
    {
        var bytes = new byte[values.Length * 4];
        Buffer.BlockCopy(values, 0, bytes, 0, bytes.Length);
        return new Tensor(name, "F32", shape, bytes);
    }

    /// <summary>A float32 tensor whose elements are 0, 1, 2, ... in row-major order.</summary>
    internal static Tensor Arange(string name, params long[] shape)
        => F32(name, shape, Enumerable.Range(0, (int)shape.Aggregate(1L, (a, b) => a * b)).Select(i => (float)i).ToArray());

    /// <summary>A zero-filled tensor of any dtype.</summary>
    internal static Tensor Zeros(string name, string dtype, long[] shape)
    {
        int size = dtype switch { "F64" or "I64" => 8, "F32" or "I32" => 4, "F16" or "BF16" or "I16" => 2, _ => 1 };
        return new Tensor(name, dtype, shape, new byte[shape.Aggregate(1L, (a, b) => a * b) * size]);
    }

    internal static void Write(string path, IEnumerable<Tensor> tensors)
    {
        var list = tensors.ToList();
        var header = new JsonObject();
        long offset = 0;
        foreach (var t in list)
        {
            header[t.Name] = new JsonObject
            {
                ["dtype"] = t.DType,
                ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + t.Data.Length),
            };
            offset += t.Data.Length;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        using var stream = File.Create(path);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        stream.Write(length);
        stream.Write(json);
        for (int i = json.Length; i < padded; i++) stream.WriteByte((byte)' ');
        foreach (var t in list) stream.Write(t.Data);
    }
}
