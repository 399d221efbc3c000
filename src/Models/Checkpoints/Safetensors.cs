using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Pipelines.Models.Checkpoints;

/// <summary>A checkpoint problem, naming the file and, where it applies, the tensor.</summary>
public sealed class CheckpointException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>One tensor's entry in a safetensors header.</summary>
public sealed record SafetensorsEntry(string Name, string DType, long[] Shape, long Begin, long End);

/// <summary>
/// Reads and writes the safetensors format (8-byte little-endian header length, JSON header, raw little-endian
/// data). Reads straight into native tensor memory (no managed copy) and validates the header against the file.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    private static readonly Dictionary<string, (ScalarType Type, int Size)> DTypes = new()
    {
        ["F32"] = (ScalarType.Float32, 4), ["F16"] = (ScalarType.Float16, 2), ["BF16"] = (ScalarType.BFloat16, 2),
        ["F64"] = (ScalarType.Float64, 8), ["I64"] = (ScalarType.Int64, 8), ["I32"] = (ScalarType.Int32, 4),
        ["I16"] = (ScalarType.Int16, 2), ["I8"] = (ScalarType.Int8, 1), ["U8"] = (ScalarType.Byte, 1), ["BOOL"] = (ScalarType.Bool, 1),
    };

    private readonly FileStream _stream;
    private readonly long _dataStart;

    private SafetensorsFile(string path, FileStream stream, long dataStart, Dictionary<string, SafetensorsEntry> entries, JsonObject? metadata)
    {
        Path = path;
        _stream = stream;
        _dataStart = dataStart;
        Entries = entries;
        Metadata = metadata;
    }

    public string Path { get; }
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }
    public JsonObject? Metadata { get; }

    public static SafetensorsFile Open(string path)
    {
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{path}: cannot open: {e.Message}", e);
        }
        try
        {
            var length = stream.Length;
            if (length < 8)
            {
                throw new CheckpointException($"{path}: not a safetensors file (only {length} bytes; truncated?)");
            }
            Span<byte> head = stackalloc byte[8];
            stream.ReadExactly(head);
            var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(head);
            if (headerLength == 0 || headerLength > 100_000_000 || (long)headerLength > length - 8)
            {
                throw new CheckpointException($"{path}: header length {headerLength} does not fit a {length}-byte file (truncated or not safetensors)");
            }
            var json = new byte[headerLength];
            stream.ReadExactly(json);
            JsonObject header;
            try
            {
                header = JsonNode.Parse(json)?.AsObject() ?? throw new JsonException("empty header");
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException)
            {
                throw new CheckpointException($"{path}: the header is not valid JSON ({e.Message})", e);
            }
            var dataStart = 8 + (long)headerLength;
            var dataSize = length - dataStart;
            var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
            JsonObject? metadata = null;
            foreach (var (name, value) in header)
            {
                if (name == "__metadata__")
                {
                    metadata = value as JsonObject;
                    continue;
                }
                try
                {
                    var dtype = value!["dtype"]!.GetValue<string>();
                    var shape = value["shape"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
                    var offsets = value["data_offsets"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
                    if (!DTypes.TryGetValue(dtype, out var info))
                    {
                        throw new CheckpointException($"{path}: tensor \"{name}\" has unsupported dtype {dtype}");
                    }
                    var bytes = shape.Aggregate(1L, (a, b) => a * b) * info.Size;
                    if (offsets.Length != 2 || offsets[0] < 0 || offsets[1] < offsets[0] || offsets[1] - offsets[0] != bytes)
                    {
                        throw new CheckpointException($"{path}: tensor \"{name}\" ({dtype} [{string.Join(",", shape)}]) needs {bytes} bytes but its offsets say [{string.Join(",", offsets)}]");
                    }
                    if (offsets[1] > dataSize)
                    {
                        throw new CheckpointException($"{path}: tensor \"{name}\" ends at byte {offsets[1]} of the data, but the file holds only {dataSize} data bytes (truncated?)");
                    }
                    entries[name] = new SafetensorsEntry(name, dtype, shape, offsets[0], offsets[1]);
                }
                catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException)
                {
                    throw new CheckpointException($"{path}: tensor \"{name}\" has a malformed header entry", e);
                }
            }
            return new SafetensorsFile(path, stream, dataStart, entries, metadata);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Reads one tensor (CPU, its stored dtype), bit-exact.</summary>
    public Tensor Read(string name)
    {
        if (!Entries.TryGetValue(name, out var entry))
        {
            throw new CheckpointException($"{Path}: no tensor \"{name}\"");
        }
        var tensor = empty(entry.Shape, DTypes[entry.DType].Type);
        var bytes = entry.End - entry.Begin;
        if (bytes > 0)
        {
            _stream.Seek(_dataStart + entry.Begin, SeekOrigin.Begin);
            try
            {
                _stream.ReadExactly(tensor.bytes);
            }
            catch (EndOfStreamException e)
            {
                tensor.Dispose();
                throw new CheckpointException($"{Path}: tensor \"{name}\" is cut short (truncated file)", e);
            }
        }
        return tensor;
    }

    /// <summary>Writes tensors in name order with a space-padded (8-byte aligned) header.</summary>
    public static void Write(string path, IEnumerable<(string Name, Tensor Tensor)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var header = new JsonObject();
        var meta = new JsonObject { ["format"] = "pt" };
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>())
        {
            meta[k] = v;
        }
        header["__metadata__"] = meta;
        long offset = 0;
        foreach (var (name, t) in list)
        {
            var dtype = DTypes.First(d => d.Value.Type == t.dtype).Key;
            var size = t.numel() * t.ElementSize;
            header[name] = new JsonObject
            {
                ["dtype"] = dtype,
                ["shape"] = new JsonArray(t.shape.Select(s => (JsonNode?)s).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + size),
            };
            offset += size;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        var padded = (json.Length + 7) / 8 * 8;
        var tmp = path + ".tmp";
        using (var stream = new FileStream(tmp, FileMode.Create, FileAccess.Write))
        {
            Span<byte> head = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(head, (ulong)padded);
            stream.Write(head);
            stream.Write(json);
            for (var i = json.Length; i < padded; i++)
            {
                stream.WriteByte((byte)' ');
            }
            foreach (var (_, t) in list)
            {
                using var contiguous = t.detach().cpu().contiguous();
                stream.Write(contiguous.bytes);
            }
        }
        File.Move(tmp, path, overwrite: true);
    }

    public void Dispose() => _stream.Dispose();
}
