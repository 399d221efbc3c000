using System.Runtime.CompilerServices;

namespace Pipelines.Tests;

/// <summary>
/// <c>PIPELINES_GC_HAMMER=1</c> runs a thread that collects and finalizes without pause while the tests run. A TorchSharp
/// object that nothing references during a native call (a temporary Scalar, a tensor made outside any dispose scope)
/// is then freed under libtorch within seconds instead of once in a few CI runs, so such a race shows up as a crash
/// in the test that has it. Off by default: it slows the suite.
/// </summary>
internal static class GcHammer
{
    [ModuleInitializer]
    internal static void Start()
    {
        if (Environment.GetEnvironmentVariable("PIPELINES_GC_HAMMER") != "1")
        {
            return;
        }
        var thread = new Thread(() =>
        {
            while (true)
            {
                GC.Collect();
                GC.WaitForPendingFinalizers();
                Thread.Sleep(1);
            }
        }) { IsBackground = true, Name = "gc-hammer" };
        thread.Start();
    }
}
