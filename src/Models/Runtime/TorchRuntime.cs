using System.Runtime.InteropServices;
using Pipelines.Build;
using TorchSharp;

namespace Pipelines.Models.Runtime;

/// <summary>Thrown when libtorch cannot be loaded; the message names the cause and the fix.</summary>
public sealed class TorchUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Loads TorchSharp reliably: applies the GLIBCXX fix if the build did not, tames glibc malloc fragmentation
/// (mallopt, unless jemalloc is preloaded), and probes libtorch once with a clear error if it cannot load.
/// Every public entry point of the runtime calls <see cref="EnsureLoaded"/>.
/// </summary>
public static partial class TorchRuntime
{
    private static readonly Lock Gate = new();
    private static bool _loaded;

    private const int MTrimThreshold = -1;
    private const int MMmapThreshold = -3;
    private const int MMmapMax = -4;
    private const int MArenaMax = -8;

    [LibraryImport("libc", EntryPoint = "mallopt")]
    private static partial int Mallopt(int param, int value);

    /// <summary>What the allocator guard did: "jemalloc", "mallopt" or "default".</summary>
    public static string Allocator { get; private set; } = "unset";

    public static void EnsureLoaded()
    {
        if (_loaded)
        {
            return;
        }
        lock (Gate)
        {
            if (_loaded)
            {
                return;
            }
            PatchNativeLibraries();
            ConfigureAllocator();
            try
            {
                using var probe = torch.ones(1);
                _ = probe.sum().item<float>();
            }
            catch (Exception e) when (e is TypeInitializationException or NotSupportedException or DllNotFoundException or ExternalException)
            {
                throw new TorchUnavailableException(Explain(e), e);
            }
            _loaded = true;
        }
    }

    /// <summary>
    /// The libtorch backend: "cuda" for a -p:TorchBackend=cuda build, or for any build whose libtorch comes from an
    /// installed PyTorch with CUDA (LD_LIBRARY_PATH names a folder holding libtorch_cuda.so, and the CPU natives are not
    /// beside the program: scripts/device-check.sh publishes that way); else "cpu" (TorchSharp-cpu).
    /// </summary>
#if TORCH_CUDA
    public static string Backend { get; } = "cuda";
#else
    public static string Backend { get; } = ExternalCudaLibtorch() ? "cuda" : "cpu";
#endif

    private static bool ExternalCudaLibtorch()
    {
        if (!OperatingSystem.IsLinux() || File.Exists(Path.Combine(AppContext.BaseDirectory, "libtorch_cpu.so")))
        {
            return false;
        }
        return (Environment.GetEnvironmentVariable("LD_LIBRARY_PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries)
            .Any(d => File.Exists(Path.Combine(d, "libtorch_cuda.so")));
    }

    private static torch.Device? _compute;

    /// <summary>
    /// The one device every activity computes on, resolved once per process from <c>PIPELINES_DEVICE</c>
    /// (<c>auto</c>, the default; <c>cpu</c>; <c>cuda</c> or <c>cuda:N</c>): CUDA when this build links the CUDA backend
    /// and a GPU answers, else the CPU. Models load onto it and batches are built on it; the cache key records its kind.
    /// </summary>
    public static torch.Device ComputeDevice
    {
        get
        {
            if (_compute is null)
            {
                lock (Gate)
                {
                    _compute ??= DefaultDevice();
                }
            }
            return _compute;
        }
    }

    /// <summary>
    /// The kind of <see cref="ComputeDevice"/> ("cpu" or "cuda") for cache keys. A CPU-only build answers without
    /// loading libtorch, so validating a workflow never needs the native library.
    /// </summary>
    public static string ComputeDeviceKind()
    {
        var want = Requested();
        if (Backend == "cpu" && !want.StartsWith("cuda", StringComparison.Ordinal))
        {
            return "cpu";
        }
        return ComputeDevice.type == DeviceType.CUDA ? "cuda" : "cpu";
    }

    private static string Requested() => (Environment.GetEnvironmentVariable("PIPELINES_DEVICE") ?? "auto").Trim().ToLowerInvariant();

    /// <summary>The device to compute on: CUDA when the CUDA backend is present and a GPU answers, else CPU.</summary>
    public static torch.Device DefaultDevice(string? requested = null)
    {
        var want = requested?.Trim().ToLowerInvariant() ?? Requested();
        if (want is not ("auto" or "cpu" or "cuda") && !System.Text.RegularExpressions.Regex.IsMatch(want, @"^cuda:[0-9]{1,2}\z"))
        {
            throw new TorchUnavailableException($"PIPELINES_DEVICE=\"{want}\" is not a device: expected auto, cpu, cuda or cuda:N");
        }
        if (want == "cpu")
        {
            return torch.CPU;
        }
        if (Backend == "cpu")
        {
            if (want != "auto")
            {
                throw new TorchUnavailableException($"device \"{want}\" was requested but this build links the CPU backend: build with -p:TorchBackend=cuda");
            }
            return torch.CPU;
        }
        EnsureLoaded();
        var cuda = torch.cuda.is_available();
        if (want.StartsWith("cuda", StringComparison.Ordinal) && !cuda)
        {
            throw new TorchUnavailableException($"device \"{want}\" was requested but CUDA is not available: check the NVIDIA driver");
        }
        return cuda ? new torch.Device(want == "auto" ? "cuda" : want) : torch.CPU;
    }

    private static void PatchNativeLibraries()
    {
        if (!OperatingSystem.IsLinux())
        {
            return;
        }
        foreach (var file in Directory.EnumerateFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories))
        {
            try
            {
                ElfGlibcxxPatch.Apply(file);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Read-only install: the build-time fix should already have run; the probe reports otherwise.
            }
        }
    }

    private static void ConfigureAllocator()
    {
        if (!OperatingSystem.IsLinux())
        {
            Allocator = "default";
            return;
        }
        if ((Environment.GetEnvironmentVariable("LD_PRELOAD") ?? "").Contains("jemalloc", StringComparison.Ordinal))
        {
            Allocator = "jemalloc";
            return;
        }
        if (Environment.GetEnvironmentVariable("PIPELINES_MALLOC") == "default")
        {
            Allocator = "default";
            return;
        }
        // glibc's dynamic mmap threshold fragments the heap under libtorch (RSS +10 MB per forward): pin it. Not too low:
        // at 128 KiB every activation of a small model was a fresh mmap with page faults, and toy training ran 7x
        // slower (180 s instead of 25 s for 800 steps); at 4 MiB small tensors reuse the heap and big ones still map.
        // Under a sandboxed kernel a page fault costs tens of microseconds, so every tensor mapped fresh and unmapped
        // after use is paid for again page by page: a 1536×768 GEMM output (4.7 MB) took 23 ms instead of 4. glibc's
        // largest threshold (32 MiB on 64-bit) keeps activations and gradients in the heap, and a high trim threshold
        // keeps the freed top of the heap for the next pass.
        // Above 32 MiB glibc would still map (the logits of a GPT-2 batch are 51 MB), so mapping is off altogether and
        // one arena serves every thread (other arenas are mapped heaps that give pages back as they shrink). The
        // bench's long-loop row measures what this costs in resident memory. PIPELINES_MALLOC=mmap keeps glibc's
        // mapping above the threshold, for comparison.
        Mallopt(MMmapThreshold, 32 * 1024 * 1024);
        Mallopt(MTrimThreshold, 512 * 1024 * 1024);
        if (Environment.GetEnvironmentVariable("PIPELINES_MALLOC") != "mmap")
        {
            Mallopt(MMmapMax, 0);
            Mallopt(MArenaMax, 1);
            Allocator = Environment.GetEnvironmentVariable("MALLOC_ARENA_MAX") == "1"
                ? "mallopt (heap only, one arena)"
                : "mallopt (heap only; threads keep the arenas made before it: set MALLOC_ARENA_MAX=1)";
            return;
        }
        Allocator = "mallopt (maps ≥ 32 MiB)";
    }

    private static string Explain(Exception e)
    {
        var native = Directory.EnumerateFiles(AppContext.BaseDirectory, "libLibTorchSharp.so", SearchOption.AllDirectories).FirstOrDefault();
        if (native is null)
        {
            return "libtorch could not be loaded: libLibTorchSharp.so is not next to the program. Build with the TorchSharp-cpu package " +
                   "(the default) or -p:TorchBackend=cuda, and set RuntimeIdentifier=linux-x64.";
        }
        if (OperatingSystem.IsLinux() && ElfGlibcxxPatch.NeedsPatch(native))
        {
            return $"libtorch could not be loaded: {native} needs GLIBCXX_3.4.32, newer than this system's libstdc++ " +
                   "(Debian 12 has 3.4.30), and the file could not be patched (read-only?). Rebuild with this repository's " +
                   "build/TorchSharpGlibcxxFix.targets, or make the file writable once.";
        }
        var inner = e;
        while (inner.InnerException is not null)
        {
            inner = inner.InnerException;
        }
        return $"libtorch could not be loaded ({inner.Message}). Check that libtorch {TorchVersion} natives for linux-x64 are present.";
    }

    public const string TorchVersion = "2.10.0";
}
