using System.Diagnostics;

namespace Pipelines.IntegrationTests;

/// <summary>
/// The model runtimes under a GC hammer (bench/Pipelines.Bench gc-race, in its own process so a crash fails this test
/// alone): language-model forwards and training steps and toy-diffusion sampling, while another thread collects and
/// finalizes without pause. A TorchSharp object that nothing references during a native call is then freed under
/// libtorch within seconds. The Scalar ban (build/BannedSymbols.txt) is what keeps this from crashing: the commit before
/// it crashed within 30 s in two runs of three ("Expected false to be true ... toFloat", in the norm's forward).
/// </summary>
public sealed class GcRaceTests
{
    [Fact]
    public async Task TheRuntimesSurviveAGcHammer()
    {
        var bench = Path.Combine(RepoPaths.Root(), "bench", "Pipelines.Bench", "bin", "Release", "net10.0", "linux-x64", "Pipelines.Bench.dll");
        Assert.True(File.Exists(bench), $"build the solution in Release first: {bench} is missing");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { bench, "gc-race", "40" })
        {
            psi.ArgumentList.Add(a);
        }
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(TestTime.Seconds(300));
        try
        {
            await p.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail("gc-race did not finish in time\n" + await stdout + await stderr);
        }
        var output = await stdout + await stderr;
        Assert.True(p.ExitCode == 0, $"gc-race exited {p.ExitCode}:\n{output}");
        Assert.Contains("no crash", output);
    }
}
