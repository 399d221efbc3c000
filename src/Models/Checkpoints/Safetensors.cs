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

    /// <summary>
    /// The largest header accepted (16 MiB): a real checkpoint's header takes about 150 bytes a tensor, so this is
    /// room for 100,000 tensors, while a hostile header cannot make the parser hold gigabytes.
    /// </summary>
    public const long MaxHeaderBytes = 16L << 20;

    public static SafetensorsFile Open(string path)
    {
        if (!Common.SafeFiles.IsRegularFile(path))
        {
            throw new CheckpointException(File.Exists(path) || Directory.Exists(path) || Common.SafeFiles.IsSpecial(path)
                ? $"{path}: not a regular file (a directory, FIFO, socket or device); expected a safetensors file"
                : $"{path}: no such file");
        }
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CheckpointException($"{path}: cannot open ({e.GetType().Name.Replace("Exception", "")})", e);
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
            if (headerLength == 0 || headerLength > (ulong)(length - 8))
            {
                throw new CheckpointException($"{path}: header length {headerLength} does not fit a {length}-byte file (truncated or not safetensors)");
            }
            if (headerLength > MaxHeaderBytes)
            {
                throw new CheckpointException($"{path}: the header is {headerLength:N0} bytes; at most {MaxHeaderBytes:N0} are accepted");
            }
            var json = new byte[headerLength];
            stream.ReadExactly(json);
            var dataStart = 8 + (long)headerLength;
            var (entries, metadata) = ParseHeader(path, json, length - dataStart);
            return new SafetensorsFile(path, stream, dataStart, entries, metadata);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Checks every entry against the file: a known dtype, non-negative dimensions whose product (in bytes) does not
    /// overflow and equals the entry's span, spans inside the data and not overlapping, no duplicate names.
    /// </summary>
    private static (Dictionary<string, SafetensorsEntry>, JsonObject?) ParseHeader(string path, byte[] json, long dataSize)
    {
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw new CheckpointException($"{path}: the header is not valid JSON ({e.Message.Split(" LineNumber:")[0].TrimEnd('.')})", e);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new CheckpointException($"{path}: the header is not a JSON object");
            }
            var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
            JsonObject? metadata = null;
            string Shown(string name) => name.Length > 80 ? name[..80] + "…" : name;
            foreach (var property in document.RootElement.EnumerateObject())
            {
                var name = property.Name;
                if (entries.ContainsKey(name) || (name == "__metadata__" && metadata is not null))
                {
                    throw new CheckpointException($"{path}: the header names \"{Shown(name)}\" twice");
                }
                var value = property.Value;
                if (name == "__metadata__")
                {
                    metadata = value.ValueKind == JsonValueKind.Object ? JsonNode.Parse(value.GetRawText()) as JsonObject : null;
                    continue;
                }
                if (value.ValueKind != JsonValueKind.Object
                    || !value.TryGetProperty("dtype", out var dtypeElement) || dtypeElement.ValueKind != JsonValueKind.String
                    || !value.TryGetProperty("shape", out var shapeElement) || shapeElement.ValueKind != JsonValueKind.Array
                    || !value.TryGetProperty("data_offsets", out var offsetsElement) || offsetsElement.ValueKind != JsonValueKind.Array)
                {
                    throw new CheckpointException($"{path}: tensor \"{Shown(name)}\" has a malformed header entry (expected dtype, shape and data_offsets)");
                }
                var dtype = dtypeElement.GetString()!;
                if (!DTypes.TryGetValue(dtype, out var info))
                {
                    throw new CheckpointException($"{path}: tensor \"{Shown(name)}\" has unsupported dtype {(dtype.Length > 20 ? dtype[..20] + "…" : dtype)}");
                }
                var shape = Integers(shapeElement, 16);
                var offsets = Integers(offsetsElement, 2);
                if (shape is null || shape.Any(d => d < 0))
                {
                    throw new CheckpointException($"{path}: tensor \"{Shown(name)}\" has an invalid shape (expected at most 16 non-negative integers)");
                }
                long bytes;
                try
                {
                    bytes = checked(shape.Aggregate(1L, (a, b) => a * b) * info.Size);
                }
                catch (OverflowException)
                {
                    throw new CheckpointException($"{path}: tensor \"{Shown(name)}\" has shape [{string.Join(",", shape)}], too large to exist");
                }
                if (offsets is null || offsets.Length != 2 || offsets[0] < 0 || offsets[1] < offsets[0] || offsets[1] - offsets[0] != bytes)
                {
                    throw new CheckpointException($"{path}: tensor \"{Shown(name)}\" ({dtype} [{string.Join(",", shape)}]) needs {bytes} bytes but its offsets say [{(offsets is null ? "?" : string.Join(",", offsets))}]");
                }
                if (offsets[1] > dataSize)
                {
                    throw new CheckpointException($"{path}: tensor \"{Shown(name)}\" ends at byte {offsets[1]} of the data, but the file holds only {dataSize} data bytes (truncated?)");
                }
                entries[name] = new SafetensorsEntry(name, dtype, shape, offsets[0], offsets[1]);
            }
            SafetensorsEntry? previous = null;
            foreach (var entry in entries.Values.Where(e => e.End > e.Begin).OrderBy(e => e.Begin))
            {
                if (previous is not null && entry.Begin < previous.End)
                {
                    throw new CheckpointException($"{path}: tensors \"{Shown(previous.Name)}\" and \"{Shown(entry.Name)}\" overlap in the data (offsets {previous.Begin}–{previous.End} and {entry.Begin}–{entry.End})");
                }
                previous = entry;
            }
            return (entries, metadata);
        }
    }

    /// <summary>An array of at most <paramref name="max"/> 64-bit integers, or null.</summary>
    private static long[]? Integers(JsonElement array, int max)
    {
        if (array.GetArrayLength() > max)
        {
            return null;
        }
        var values = new long[array.GetArrayLength()];
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out values[i++]))
            {
                return null;
            }
        }
        return values;
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
