using System.Runtime.InteropServices;

namespace Pipelines.Bench;

/// <summary>
/// The peak of the bytes the C heap has handed out (glibc's mallinfo2: in-use chunks plus mapped blocks) while an
/// action runs, sampled every millisecond from another thread. Unlike the kernel's peak RSS it sees memory that a
/// retained heap reuses, so a later, larger batch is measured even when the heap already holds an earlier one's pages.
/// </summary>
internal static partial class HeapMeter
{
    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    [LibraryImport("libc", EntryPoint = "mallinfo2")]
    private static partial MallInfo2 Info();

    /// <summary>Bytes in use now.</summary>
    public static long InUse()
    {
        var i = Info();
        return (long)(i.Uordblks + i.Hblkhd);
    }

    /// <summary>The largest in-use figure seen while <paramref name="action"/> ran, less the figure before it.</summary>
    public static long PeakAbove(Action action)
    {
        var before = InUse();
        var peak = before;
        var done = false;
        var sampler = new Thread(() =>
        {
            while (!Volatile.Read(ref done))
            {
                var now = InUse();
                if (now > Interlocked.Read(ref peak))
                {
                    Interlocked.Exchange(ref peak, now);
                }
                Thread.Sleep(1);
            }
        }) { IsBackground = true };
        sampler.Start();
        try
        {
            action();
        }
        finally
        {
            Volatile.Write(ref done, true);
            sampler.Join();
        }
        return Math.Max(InUse(), peak) - before;
    }
}
