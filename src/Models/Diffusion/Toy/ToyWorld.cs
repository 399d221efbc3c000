using Pipelines.Models.Common;
using static TorchSharp.torch;

namespace Pipelines.Models.Diffusion.Toy;

/// <summary>One procedural image's factors: shape, colour, size (fraction of the side), centre offset, texture.</summary>
public sealed record ToyItem(int Shape, int Colour, double Size, double Dx, double Dy, int Texture);

/// <summary>
/// The toy world of research diffusion.md §6.1: a shape {circle, square, triangle, cross} of a colour {red, green,
/// blue, yellow}, size 0.18–0.38 of the side, centre jittered ±15 %, on a grey background with noise; 16 px (default)
/// or 32 px with an optional striped texture. Prompts "&lt;size&gt; &lt;colour&gt; &lt;texture&gt; &lt;shape&gt;" with word dropout and
/// a share of empty prompts for classifier-free guidance. Every factor is known, so every metric can be checked.
/// </summary>
public sealed class ToyWorld(int size = 16, bool textures = false)
{
    public static readonly string[] Shapes = ["circle", "square", "triangle", "cross"];
    public static readonly string[] Colours = ["red", "green", "blue", "yellow"];
    public static readonly string[] Textures = ["solid", "striped"];
    public static readonly string[] SizeWords = ["small", "large"];
    public const double MinSize = 0.18, MaxSize = 0.38;

    private static readonly float[][] Rgb =
    [
        [0.9f, -0.8f, -0.8f], [-0.8f, 0.75f, -0.8f], [-0.8f, -0.7f, 0.9f], [0.9f, 0.85f, -0.85f],
    ];

    public int Side { get; } = size is 16 or 32 ? size : throw new ArgumentOutOfRangeException(nameof(size), "the toy world draws 16 or 32 px images");
    public bool UsesTextures { get; } = textures;

    /// <summary>Every word a prompt can hold (the tokenizer's vocabulary).</summary>
    public static IEnumerable<string> Words => SizeWords.Concat(Colours).Concat(Textures).Concat(Shapes);

    /// <summary>"small" below 0.25 of the side, "large" above 0.31, no size word between.</summary>
    public static string? SizeWord(double size) => size < 0.25 ? "small" : size > 0.31 ? "large" : null;

    public ToyItem RandomItem(SeededRandom r, int? shape = null, int? colour = null) => new(
        shape ?? r.Next(Shapes.Length), colour ?? r.Next(Colours.Length), MinSize + (MaxSize - MinSize) * r.NextDouble(),
        (r.NextDouble() * 2 - 1) * 0.15, (r.NextDouble() * 2 - 1) * 0.15, UsesTextures ? r.Next(2) : 0);

    /// <summary>The full prompt of an item (every factor named).</summary>
    public string Prompt(ToyItem item) => Compose(SizeWord(item.Size), Colours[item.Colour], UsesTextures ? Textures[item.Texture] : null, Shapes[item.Shape]);

    /// <summary>A training prompt: each word dropped with probability p; empty with probability pEmpty.</summary>
    public string TrainingPrompt(ToyItem item, SeededRandom r, double dropout = 0.15, double pEmpty = 0.1)
    {
        if (r.NextDouble() < pEmpty)
        {
            return "";
        }
        string? Keep(string? w) => w is not null && r.NextDouble() >= dropout ? w : null;
        return Compose(Keep(SizeWord(item.Size)), Keep(Colours[item.Colour]), UsesTextures ? Keep(Textures[item.Texture]) : null, Keep(Shapes[item.Shape]));
    }

    private static string Compose(params string?[] words) => string.Join(' ', words.Where(w => w is not null));

    /// <summary>Draws items as [B, 3, side, side] in [−1, 1] (4×4 supersampled edges, background 0.1 + N(0, 0.03)).</summary>
    public Tensor Render(IReadOnlyList<ToyItem> items, SeededRandom r, double backgroundNoise = 0.03)
    {
        var s = Side;
        var data = new float[items.Count * 3 * s * s];
        for (var b = 0; b < items.Count; b++)
        {
            var it = items[b];
            var colour = Rgb[it.Colour];
            for (var y = 0; y < s; y++)
            {
                for (var x = 0; x < s; x++)
                {
                    var cover = 0.0;
                    for (var sy = 0; sy < 4; sy++)
                    {
                        for (var sx = 0; sx < 4; sx++)
                        {
                            var u = (x + (sx + 0.5) / 4) / s - 0.5 - it.Dx;
                            var v = (y + (sy + 0.5) / 4) / s - 0.5 - it.Dy;
                            cover += Inside(it.Shape, u, v, it.Size / 2) ? 1 : 0;
                        }
                    }
                    cover /= 16;
                    var stripe = it.Texture == 1 && (y / 2) % 2 == 1 ? 0.45 : 1.0;
                    for (var c = 0; c < 3; c++)
                    {
                        var bg = 0.1 + backgroundNoise * r.NextGaussian();
                        data[((b * 3 + c) * s + y) * s + x] = (float)(bg * (1 - cover) + colour[c] * stripe * cover);
                    }
                }
            }
        }
        return tensor(data, [items.Count, 3, s, s]);
    }

    /// <summary>Whether (u, v), relative to the centre in side units (v down), lies in a shape of half-size h.</summary>
    public static bool Inside(int shape, double u, double v, double h) => shape switch
    {
        0 => u * u + v * v <= h * h,
        1 => Math.Abs(u) <= 0.85 * h && Math.Abs(v) <= 0.85 * h,
        2 => v >= -h && v <= h && Math.Abs(u) <= (v + h) / 2,
        _ => (Math.Abs(u) <= h / 3 && Math.Abs(v) <= h) || (Math.Abs(v) <= h / 3 && Math.Abs(u) <= h),
    };

    /// <summary>A training batch: images, prompts (with dropout) and the items.</summary>
    public (Tensor Images, string[] Prompts, ToyItem[] Items) Batch(int n, SeededRandom r, double dropout = 0.15, double pEmpty = 0.1)
    {
        var items = Enumerable.Range(0, n).Select(_ => RandomItem(r)).ToArray();
        return (Render(items, r), items.Select(i => TrainingPrompt(i, r, dropout, pEmpty)).ToArray(), items);
    }

    /// <summary>The evaluation prompts: every colour × shape ("red circle"), with the factors they name.</summary>
    public static IReadOnlyList<(string Prompt, int Shape, int Colour)> ColourShapePrompts() =>
        (from c in Enumerable.Range(0, Colours.Length) from s in Enumerable.Range(0, Shapes.Length) select ($"{Colours[c]} {Shapes[s]}", s, c)).ToList();

    /// <summary>The factors a prompt names (−1 where it names none); unknown words are ignored.</summary>
    public static (int Shape, int Colour, int SizeWord) Parse(string prompt)
    {
        var words = prompt.ToLowerInvariant().Split(' ', StringSplitOptions.RemoveEmptyEntries);
        return (Array.FindIndex(Shapes, s => words.Contains(s)), Array.FindIndex(Colours, c => words.Contains(c)), Array.FindIndex(SizeWords, w => words.Contains(w)));
    }
}
