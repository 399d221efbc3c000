using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Tests.Models;

/// <summary>
/// Hostile checkpoints: each class is refused with one line (a CheckpointException naming the file), before any
/// large allocation, without a native trace, a hang or a memory blow-up.
/// </summary>
public sealed class HostileCheckpointTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "pipelines-hostile-" + Guid.NewGuid().ToString("N")[..8]);

    public HostileCheckpointTests()
    {
        using var model = TinyModels.Create("gpt2");
        Checkpoint.Save(model, _dir);
    }

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private void EditConfig(Action<JsonObject> edit)
    {
        var path = Path.Combine(_dir, "config.json");
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    /// <summary>Writes a safetensors file with the given raw header and data bytes.</summary>
    private string WriteSafetensors(string header, int dataBytes)
    {
        var path = Path.Combine(_dir, "model.safetensors");
        var json = Encoding.UTF8.GetBytes(header);
        using var stream = File.Create(path);
        Span<byte> head = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(head, (ulong)json.Length);
        stream.Write(head);
        stream.Write(json);
        stream.Write(new byte[dataBytes]);
        return path;
    }

    private CheckpointException Refused()
    {
        var before = GC.GetTotalMemory(false);
        var clock = Stopwatch.StartNew();
        var e = Assert.Throws<CheckpointException>(() => Checkpoint.Load(_dir));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(20), $"took {clock.Elapsed}");
        Assert.DoesNotContain('\n', e.Message);
        Assert.DoesNotContain("frame #", e.Message);
        Assert.True(GC.GetTotalMemory(false) - before < 512L << 20, "managed memory grew by more than 512 MB");
        return e;
    }

    [Theory]
    [InlineData("n_layer", 1_000_000, "GB of parameters")]
    [InlineData("vocab_size", 1_000_000_000, "GB of parameters")]
    [InlineData("n_head", 0, "must be positive")]
    [InlineData("n_head", 5, "not divisible")]
    [InlineData("n_embd", -4, "must be positive")]
    [InlineData("n_positions", 0, "n_ctx")]
    public void ConfigsAreCheckedBeforeAnythingIsAllocated(string field, long value, string message)
    {
        EditConfig(j => j[field] = value);
        Assert.Contains(message, Refused().Message);
    }

    [Fact]
    public void AnOversizedHeaderIsRefusedWithoutParsingIt()
    {
        var path = Path.Combine(_dir, "model.safetensors");
        using (var stream = File.Create(path))
        {
            Span<byte> head = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(head, 20L << 20);
            stream.Write(head);
            stream.SetLength(8 + (20L << 20) + 16);
        }
        Assert.Contains("at most", Refused().Message);
    }

    [Theory]
    [InlineData("""{"w": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 16]}}""", "too large to exist")]
    [InlineData("""{"w": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}}""", "invalid shape")]
    [InlineData("""{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}""", "overlap")]
    [InlineData("""{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}""", "twice")]
    [InlineData("""{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 99]}}""", "needs 16 bytes")]
    [InlineData("""{"a": {"dtype": "Q4", "shape": [4], "data_offsets": [0, 16]}}""", "unsupported dtype")]
    [InlineData("""{"a": "nope"}""", "malformed header entry")]
    [InlineData("""[1, 2]""", "not a JSON object")]
    [InlineData("""{"a": {""", "not valid JSON")]
    public void MalformedHeadersGiveOneLine(string header, string message)
    {
        WriteSafetensors(header, 32);
        var e = Refused();
        Assert.Contains(message, e.Message);
        Assert.Contains("model.safetensors", e.Message);
    }

    [Fact]
    public void AFifoIsRefusedNotOpened()
    {
        var weights = Path.Combine(_dir, "model.safetensors");
        File.Delete(weights);
        using (var mkfifo = Process.Start("mkfifo", weights))
        {
            mkfifo.WaitForExit();
            Assert.Equal(0, mkfifo.ExitCode);
        }
        Assert.Contains("not a regular file", Refused().Message); // opening it would block until a writer came
    }

    [Fact]
    public void AFileIsNotACheckpointDirectory()
    {
        var e = Assert.Throws<CheckpointException>(() => Checkpoint.Load(Path.Combine(_dir, "config.json")));
        Assert.Contains("expected a HF checkpoint directory", e.Message);
    }

    [Fact]
    public void TokenIdsOutsideTheVocabularyAndPositionsBeyondTheContextAreOneLine()
    {
        using var model = Checkpoint.Load(_dir);
        using var tooBig = tensor(new long[,] { { 1, model.Config.DVocab } });
        var e = Assert.Throws<ArgumentException>(() => model.Forward(tooBig));
        Assert.Contains("outside this model's vocabulary", e.Message);
        using var negative = tensor(new long[,] { { 1, -3 } });
        Assert.Contains("-3", Assert.Throws<ArgumentException>(() => model.Forward(negative)).Message);
        using var tooLong = zeros(1, model.Config.NCtx + 1, dtype: ScalarType.Int64);
        Assert.Contains("beyond this model's context", Assert.Throws<ArgumentException>(() => model.Forward(tooLong)).Message);
    }
}
