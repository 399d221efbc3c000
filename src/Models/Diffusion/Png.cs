using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Models.Diffusion;

/// <summary>
/// Images out of the runtime: tensors in [−1, 1] to 8-bit RGB (<c>clamp((x+1)/2)</c>, as diffusers' postprocess),
/// tiled into grids with optional nearest-neighbour upscaling (toy images are 16 px), written as PNG (zlib, filter 0).
/// </summary>
public static class Png
{
    private static readonly uint[] Crc = BuildCrc();

    /// <summary>An RGB image: width, height and row-major bytes (3 per pixel).</summary>
    public sealed record Rgb(int Width, int Height, byte[] Pixels);

    /// <summary>[3, H, W] or [1, 3, H, W] in [−1, 1] → RGB bytes.</summary>
    public static Rgb FromTensor(Tensor image)
    {
        using var scope = NewDisposeScope();
        var x = image.dim() == 4 ? image[0] : image;
        var c = x.shape[0];
        if (c != 3 && c != 1)
        {
            throw new ArgumentException($"an image needs 1 or 3 channels, got {c}");
        }
        var rgb = c == 1 ? x.expand(3, -1, -1) : x;
        var bytes = rgb.detach().to(ScalarType.Float32).Plus(Scalars.Of(1.0)).mul(Scalars.Of(127.5)).clamp(Scalars.Of(0.0), Scalars.Of(255.0)).round().to(ScalarType.Byte).permute(1, 2, 0).contiguous();
        return new Rgb((int)x.shape[2], (int)x.shape[1], bytes.data<byte>().ToArray());
    }

    /// <summary>Tiles images row-major into <paramref name="columns"/> columns with a 2-pixel gap, each upscaled ×scale.</summary>
    public static Rgb Grid(IReadOnlyList<Rgb> images, int columns, int scale = 1, byte gap = 255)
    {
        if (images.Count == 0)
        {
            throw new ArgumentException("a grid needs at least one image");
        }
        columns = Math.Clamp(columns, 1, images.Count);
        var rows = (images.Count + columns - 1) / columns;
        int cw = images.Max(i => i.Width) * scale, ch = images.Max(i => i.Height) * scale, pad = 2;
        int width = columns * cw + (columns + 1) * pad, height = rows * ch + (rows + 1) * pad;
        var pixels = new byte[width * height * 3];
        Array.Fill(pixels, gap);
        for (var n = 0; n < images.Count; n++)
        {
            var img = images[n];
            int ox = pad + n % columns * (cw + pad), oy = pad + n / columns * (ch + pad);
            for (var y = 0; y < img.Height * scale; y++)
            {
                for (var x = 0; x < img.Width * scale; x++)
                {
                    var src = ((y / scale) * img.Width + x / scale) * 3;
                    var dst = ((oy + y) * width + ox + x) * 3;
                    pixels[dst] = img.Pixels[src];
                    pixels[dst + 1] = img.Pixels[src + 1];
                    pixels[dst + 2] = img.Pixels[src + 2];
                }
            }
        }
        return new Rgb(width, height, pixels);
    }

    public static void Write(string path, Rgb image)
    {
        using var file = new FileStream(path + ".tmp", FileMode.Create, FileAccess.Write);
        file.Write([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]);
        var header = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(header, image.Width);
        BinaryPrimitives.WriteInt32BigEndian(header.AsSpan(4), image.Height);
        header[8] = 8;
        header[9] = 2;
        Chunk(file, "IHDR", header);
        using var raw = new MemoryStream();
        using (var z = new ZLibStream(raw, CompressionLevel.Optimal, leaveOpen: true))
        {
            for (var y = 0; y < image.Height; y++)
            {
                z.WriteByte(0);
                z.Write(image.Pixels, y * image.Width * 3, image.Width * 3);
            }
        }
        Chunk(file, "IDAT", raw.ToArray());
        Chunk(file, "IEND", []);
        file.Close();
        File.Move(path + ".tmp", path, true);
    }

    private static void Chunk(Stream s, string type, byte[] data)
    {
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
        s.Write(len);
        var typeBytes = Encoding.ASCII.GetBytes(type);
        s.Write(typeBytes);
        s.Write(data);
        var crc = 0xFFFFFFFFu;
        foreach (var b in typeBytes.Concat(data))
        {
            crc = Crc[(crc ^ b) & 0xFF] ^ (crc >> 8);
        }
        BinaryPrimitives.WriteUInt32BigEndian(len, crc ^ 0xFFFFFFFFu);
        s.Write(len);
    }

    private static uint[] BuildCrc()
    {
        var table = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            var c = n;
            for (var k = 0; k < 8; k++)
            {
                c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            }
            table[n] = c;
        }
        return table;
    }
}
