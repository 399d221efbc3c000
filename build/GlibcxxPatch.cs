// Marks libLibTorchSharp.so's need for GLIBCXX_3.4.31/3.4.32 as weak (VER_FLG_WEAK), so it loads on Debian 12,
// whose libstdc++ stops at 3.4.30. TorchSharp 0.107's native library is built on Ubuntu 26.04; the only symbol with
// that version (std::ios_base_library_init) is a link-time marker with no relocation, so a weak need is safe.
// Used twice: as an MSBuild inline task after Build and Publish (build/TorchSharpGlibcxxFix.targets) and as a runtime
// guard in Pipelines.Models (compiled with PIPELINES_RUNTIME). Idempotent; a no-op on an already patched file.
using System;
using System.IO;
using System.Text;

namespace Pipelines.Build
{
    /// <summary>Edits the ELF version-needs table in place.</summary>
    public static class ElfGlibcxxPatch
    {
        private const uint ShtGnuVerneed = 0x6ffffffe;
        private const ushort VerFlgWeak = 0x2;

        /// <summary>Returns how many version needs it marked weak (0 when none needed it).</summary>
        public static int Apply(string path)
        {
            var bytes = File.ReadAllBytes(path);
            var changed = Patch(bytes);
            if (changed > 0)
            {
                File.WriteAllBytes(path, bytes);
            }
            return changed;
        }

        /// <summary>True when the file still has a strong need above GLIBCXX_3.4.30.</summary>
        public static bool NeedsPatch(string path) => Patch(File.ReadAllBytes(path)) > 0;

        private static int Patch(byte[] b)
        {
            if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F' || b[4] != 2 || b[5] != 1)
            {
                return 0; // not a little-endian ELF64 file
            }
            var shoff = (long)BitConverter.ToUInt64(b, 0x28);
            int shentsize = BitConverter.ToUInt16(b, 0x3A);
            int shnum = BitConverter.ToUInt16(b, 0x3C);
            var changed = 0;
            for (var i = 0; i < shnum; i++)
            {
                var sh = shoff + (long)i * shentsize;
                if (BitConverter.ToUInt32(b, (int)sh + 4) != ShtGnuVerneed)
                {
                    continue;
                }
                var offset = (long)BitConverter.ToUInt64(b, (int)sh + 0x18);
                var link = BitConverter.ToUInt32(b, (int)sh + 0x28);
                var count = BitConverter.ToUInt32(b, (int)sh + 0x2C);
                var strtab = (long)BitConverter.ToUInt64(b, (int)(shoff + link * shentsize) + 0x18);
                var vn = offset;
                for (var n = 0; n < count; n++)
                {
                    int cnt = BitConverter.ToUInt16(b, (int)vn + 2);
                    var aux = vn + BitConverter.ToUInt32(b, (int)vn + 8);
                    for (var a = 0; a < cnt; a++)
                    {
                        var flags = BitConverter.ToUInt16(b, (int)aux + 4);
                        var name = ReadString(b, strtab + BitConverter.ToUInt32(b, (int)aux + 8));
                        if (IsAbove34030(name) && (flags & VerFlgWeak) == 0)
                        {
                            var patched = BitConverter.GetBytes((ushort)(flags | VerFlgWeak));
                            b[aux + 4] = patched[0];
                            b[aux + 5] = patched[1];
                            changed++;
                        }
                        aux += BitConverter.ToUInt32(b, (int)aux + 12);
                    }
                    vn += BitConverter.ToUInt32(b, (int)vn + 12);
                }
            }
            return changed;
        }

        private static bool IsAbove34030(string name)
        {
            const string prefix = "GLIBCXX_3.4.";
            return name.StartsWith(prefix, StringComparison.Ordinal)
                && int.TryParse(name.Substring(prefix.Length), out var minor) && minor > 30;
        }

        private static string ReadString(byte[] b, long at)
        {
            var end = at;
            while (end < b.Length && b[end] != 0)
            {
                end++;
            }
            return Encoding.ASCII.GetString(b, (int)at, (int)(end - at));
        }
    }
}

#if !PIPELINES_RUNTIME
namespace Pipelines.Build
{
    /// <summary>MSBuild task: patches every libLibTorchSharp.so under a directory.</summary>
    public class MarkGlibcxxWeak : Microsoft.Build.Utilities.Task
    {
        [Microsoft.Build.Framework.Required]
        public string Directory { get; set; } = "";

        public override bool Execute()
        {
            if (!System.IO.Directory.Exists(Directory))
            {
                return true;
            }
            foreach (var file in System.IO.Directory.EnumerateFiles(Directory, "libLibTorchSharp.so", SearchOption.AllDirectories))
            {
                var changed = ElfGlibcxxPatch.Apply(file);
                if (changed > 0)
                {
                    Log.LogMessage(Microsoft.Build.Framework.MessageImportance.High, $"TorchSharp GLIBCXX fix: marked {changed} version need(s) weak in {file}");
                }
            }
            return true;
        }
    }
}
#endif
