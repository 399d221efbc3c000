using System.Security.Cryptography;
using System.Text;
using Pipelines.Engine.Artifacts;
using Pipelines.Engine.Ledger;

namespace Pipelines.Engine.Tests;

public sealed class StoreTests : IDisposable
{
    private readonly Workspace _ws = new();

    [Fact]
    public void IngestedFileIsAddressedByItsSha256()
    {
        var file = _ws.Write("x.txt", "hello");
        var manifest = _ws.Store.Ingest(file, (d, s, f) => Manifest(d, s));
        var expected = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes("hello")));
        Assert.Equal(expected, manifest.Digest);
        Assert.Equal(Path.Combine(_ws.Store.Root, "objects", "sha256", expected[..2], expected), _ws.Store.ObjectPath(expected));
        Assert.Equal("hello", File.ReadAllText(_ws.Store.ObjectPath(expected)));
        Assert.Null(_ws.Store.Verify(expected));
        Assert.Equal(5, _ws.Store.ReadManifest(expected)!.Size);
    }

    [Fact]
    public void DirectoryDigestDependsOnNamesAndContentsOnly()
    {
        var a = Path.Combine(_ws.Root, "a");
        var b = Path.Combine(_ws.Root, "b");
        Directory.CreateDirectory(Path.Combine(a, "sub"));
        Directory.CreateDirectory(Path.Combine(b, "sub"));
        File.WriteAllText(Path.Combine(a, "one.txt"), "1");
        File.WriteAllText(Path.Combine(a, "sub", "two.txt"), "2");
        File.WriteAllText(Path.Combine(b, "sub", "two.txt"), "2"); // written in the other order
        File.WriteAllText(Path.Combine(b, "one.txt"), "1");
        File.SetLastWriteTimeUtc(Path.Combine(b, "one.txt"), new DateTime(2001, 1, 1));
        Assert.Equal(Hashing.Directory(a).Digest, Hashing.Directory(b).Digest);
        File.WriteAllText(Path.Combine(b, "one.txt"), "1!");
        Assert.NotEqual(Hashing.Directory(a).Digest, Hashing.Directory(b).Digest);
    }

    [Fact]
    public void CorruptedObjectIsDetected()
    {
        var manifest = _ws.Store.Ingest(_ws.Write("x.txt", "hello"), (d, s, f) => Manifest(d, s));
        var path = _ws.Store.ObjectPath(manifest.Digest);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.WriteAllText(path, "hellO");
        Assert.Contains("content was changed", _ws.Store.Verify(manifest.Digest));
        File.Delete(path);
        Assert.Contains("missing", _ws.Store.Verify(manifest.Digest));
    }

    [Fact]
    public void IngestingTheSameContentTwiceKeepsOneObject()
    {
        var first = _ws.Store.Ingest(_ws.Write("x.txt", "same"), (d, s, f) => Manifest(d, s));
        var second = _ws.Store.Ingest(_ws.Write("y.txt", "same"), (d, s, f) => Manifest(d, s));
        Assert.Equal(first.Digest, second.Digest);
        Assert.Single(_ws.Store.ObjectDigests());
    }

    [Fact]
    public void AClaimIsExclusiveUntilReleased()
    {
        using (var claim = _ws.Store.TryClaim("k1"))
        {
            Assert.NotNull(claim);
            Assert.Null(_ws.Store.TryClaim("k1"));
            using var other = _ws.Store.TryClaim("k2");
            Assert.NotNull(other);
        }
        using var again = _ws.Store.TryClaim("k1");
        Assert.NotNull(again);
    }

    [Fact]
    public async Task CorruptedCachedOutputIsReportedAndRecomputed()
    {
        _ws.WriteDataset("data.jsonl", 200);
        var first = await _ws.RunAsync(Workflows.Chain);
        var digest = first.Steps.Single(s => s.StepId == "sample").Outputs["dataset"].Digest;
        var path = _ws.Store.ObjectPath(digest);
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        File.AppendAllText(path, "{\"id\": -1}\n");

        var warnings = new List<string>();
        var second = await _ws.RunAsync(Workflows.Chain, observer: new Recorder(warnings));
        var status = second.Steps.ToDictionary(s => s.StepId, s => s.Status);
        Assert.Equal(StepStatus.Cached, status["load"]);
        Assert.Equal(StepStatus.Computed, status["sample"]);
        Assert.Equal(digest, second.Steps.Single(s => s.StepId == "sample").Outputs["dataset"].Digest);
        Assert.Equal(StepStatus.Cached, status["split"]); // same content again, so downstream keys are unchanged
        Assert.Contains(warnings, w => w.Contains("sample") && w.Contains("content was changed"));
        Assert.Null(_ws.Store.Verify(digest));
    }

    [Fact]
    public async Task GcKeepsWhatRecentRunsReferenceAndRemovesTheRest()
    {
        _ws.WriteDataset("data.jsonl", 200);
        var old = await _ws.RunAsync(Workflows.Chain, new Dictionary<string, string> { ["seed"] = "1" });
        var recent = await _ws.RunAsync(Workflows.Chain, new Dictionary<string, string> { ["seed"] = "2" });
        var oldOnly = old.Steps.SelectMany(s => s.Outputs.Values).Select(o => o.Digest)
            .Except(recent.Steps.SelectMany(s => s.Outputs.Values).Select(o => o.Digest)).ToList();
        Assert.NotEmpty(oldOnly);

        var dry = await GarbageCollector.CollectAsync(_ws.Store, _ws.Ledger, keepRuns: 1, dryRun: true);
        Assert.Equal(oldOnly.Count, dry.ObjectsRemoved);
        Assert.All(oldOnly, d => Assert.True(_ws.Store.Contains(d)));

        var report = await GarbageCollector.CollectAsync(_ws.Store, _ws.Ledger, keepRuns: 1, dryRun: false);
        Assert.Equal(oldOnly.Count, report.ObjectsRemoved);
        Assert.All(oldOnly, d => Assert.False(_ws.Store.Contains(d)));
        var again = await _ws.RunAsync(Workflows.Chain, new Dictionary<string, string> { ["seed"] = "2" });
        Assert.Equal(0, again.Computed);
        var rerunOld = await _ws.RunAsync(Workflows.Chain, new Dictionary<string, string> { ["seed"] = "1" });
        Assert.Equal(3, rerunOld.Computed); // load is shared with the kept run
    }

    private static ObjectManifest Manifest(string digest, long size) => new()
    {
        Digest = digest, Kind = "Json", MediaType = "text/plain", Size = size, FileName = "x.txt",
        ProducerRunId = "r", ProducerStepId = "s", Activity = "test", ActivityVersion = 1, CacheKey = "k",
    };

    private sealed class Recorder(List<string> warnings) : Pipelines.Engine.Running.IRunObserver
    {
        public void Warning(string message) => warnings.Add(message);
    }

    public void Dispose() => _ws.Dispose();
}
