using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Diffusion;
using Pipelines.Models.Diffusion.Toy;
using static TorchSharp.torch;

namespace Pipelines.Activities.Diffusion;

/// <summary>One generated image: its prompt and seed, and (with a scorer) what the scorer reads off it.</summary>
public sealed record ImageSample(string Prompt, long Seed, string? Shape = null, string? Colour = null, double? Size = null, double? ShapeProbability = null, double? ColourProbability = null);

/// <summary>
/// An Images artifact (pipelines.images/1): <c>images.safetensors</c> ("images" [N, 3, H, W] in [−1, 1]),
/// <c>samples.json</c> (the sampler and its cost, per-image prompt, seed and scorer outputs, fidelity, the scorer's clean
/// accuracy) and <c>grid.png</c> (one row per prompt).
/// </summary>
public sealed record ImageSet
{
    public const string Format = "pipelines.images/1";

    public required string Sampler { get; init; }
    public required string Description { get; init; }

    /// <summary>UNet evaluations per image (guidance doubles a step's cost).</summary>
    public required int UnetCalls { get; init; }
    public required IReadOnlyList<ImageSample> Samples { get; init; }
    public double Seconds { get; init; }
    public double? FidelityShape { get; init; }
    public double? FidelityColour { get; init; }
    public ScorerAccuracy? Scorer { get; init; }

    public IReadOnlyList<string> Prompts => Samples.Select(s => s.Prompt).Distinct().ToList();

    /// <summary>Scores images with the toy scorer (null: no scores) and builds the record.</summary>
    public static ImageSet Build(string sampler, string description, int unetCalls, IReadOnlyList<(string Prompt, long Seed)> rows, Tensor images, ToyScorer? scorer, ToyWorld? world, double seconds)
    {
        if (scorer is null)
        {
            return new ImageSet { Sampler = sampler, Description = description, UnetCalls = unetCalls, Samples = rows.Select(r => new ImageSample(r.Prompt, r.Seed)).ToList(), Seconds = seconds };
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var o = scorer.Forward(images);
        var sp = o.ShapeLogits.softmax(1);
        var cp = o.ColourLogits.softmax(1);
        var shape = sp.argmax(1).data<long>().ToArray();
        var colour = cp.argmax(1).data<long>().ToArray();
        var spMax = sp.amax([1L]).data<float>().ToArray();
        var cpMax = cp.amax([1L]).data<float>().ToArray();
        var size = o.Size.data<float>().ToArray();
        var samples = rows.Select((r, i) => new ImageSample(r.Prompt, r.Seed, ToyWorld.Shapes[shape[i]], ToyWorld.Colours[colour[i]],
            Math.Round(ToyWorld.MinSize + size[i] * (ToyWorld.MaxSize - ToyWorld.MinSize), 4), Math.Round(spMax[i], 4), Math.Round(cpMax[i], 4))).ToList();
        double? Agreement(Func<(int Shape, int Colour, int SizeWord), int> pick, Func<ImageSample, string?> got, string[] names)
        {
            var named = samples.Where(s => pick(ToyWorld.Parse(s.Prompt)) >= 0).ToList();
            return named.Count == 0 ? null : named.Count(s => got(s) == names[pick(ToyWorld.Parse(s.Prompt))]) / (double)named.Count;
        }
        return new ImageSet
        {
            Sampler = sampler, Description = description, UnetCalls = unetCalls, Samples = samples, Seconds = seconds,
            FidelityShape = Agreement(p => p.Shape, s => s.Shape, ToyWorld.Shapes), FidelityColour = Agreement(p => p.Colour, s => s.Colour, ToyWorld.Colours),
            Scorer = world is null ? null : scorer.Evaluate(world),
        };
    }

    /// <summary>Writes the three files; the grid has one row per prompt (nearest-neighbour ×4 for images under 64 px).</summary>
    public void Write(string dir, Tensor images)
    {
        Directory.CreateDirectory(dir);
        SafetensorsFile.Write(Path.Combine(dir, "images.safetensors"), [("images", images.detach().to(ScalarType.Float32).contiguous())]);
        var json = new JsonObject
        {
            ["format"] = Format, ["sampler"] = Sampler, ["description"] = Description, ["unetCalls"] = UnetCalls, ["seconds"] = Math.Round(Seconds, 2),
            ["fidelity"] = FidelityShape is null && FidelityColour is null ? null : new JsonObject { ["shape"] = FidelityShape, ["colour"] = FidelityColour },
            ["scorer"] = Scorer is null ? null : new JsonObject { ["shape"] = Scorer.Shape, ["colour"] = Scorer.Colour, ["sizeCorrelation"] = Math.Round(Scorer.SizeCorrelation, 4), ["images"] = Scorer.Images },
            ["samples"] = new JsonArray(Samples.Select(s => (JsonNode?)JsonSerializer.SerializeToNode(s, JsonOptions)).ToArray()),
        };
        File.WriteAllText(Path.Combine(dir, "samples.json"), json.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        var tiles = Enumerable.Range(0, (int)images.shape[0]).Select(i => Png.FromTensor(images[i])).ToList();
        var perPrompt = Samples.Count / Math.Max(1, Prompts.Count);
        Png.Write(Path.Combine(dir, "grid.png"), Png.Grid(tiles, Math.Max(1, perPrompt), tiles[0].Width < 64 ? 4 : 1));
    }

    private static readonly JsonSerializerOptions JsonOptions = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull };

    public static ImageSet Read(string dir, string port)
    {
        var path = Path.Combine(dir, "samples.json");
        try
        {
            var o = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new ActivityException($"{port}: samples.json is not a JSON object");
            if (o["format"]?.ToString() != Format)
            {
                throw new ActivityException($"{port}: $.format: expected \"{Format}\"");
            }
            var samples = o["samples"]?.Deserialize<List<ImageSample>>(JsonOptions) ?? throw new ActivityException($"{port}: $.samples: expected a list");
            ScorerAccuracy? scorer = o["scorer"] is JsonObject s ? new ScorerAccuracy(s["shape"]!.GetValue<double>(), s["colour"]!.GetValue<double>(), s["sizeCorrelation"]!.GetValue<double>(), s["images"]!.GetValue<int>()) : null;
            return new ImageSet
            {
                Sampler = o["sampler"]!.ToString(), Description = o["description"]?.ToString() ?? "", UnetCalls = o["unetCalls"]!.GetValue<int>(), Samples = samples,
                Seconds = o["seconds"]?.GetValue<double>() ?? 0, FidelityShape = o["fidelity"]?["shape"]?.GetValue<double?>(), FidelityColour = o["fidelity"]?["colour"]?.GetValue<double?>(), Scorer = scorer,
            };
        }
        catch (Exception e) when (e is JsonException or IOException or InvalidOperationException or NullReferenceException or FormatException)
        {
            throw new ActivityException($"{port}: not an Images artifact ({e.GetType().Name}: {e.Message.Split('\n')[0]})");
        }
    }

    public static Tensor ReadImages(string dir, string port)
    {
        try
        {
            using var f = SafetensorsFile.Open(Path.Combine(dir, "images.safetensors"));
            return f.Read("images").to(ScalarType.Float32);
        }
        catch (CheckpointException e)
        {
            throw new ActivityException($"{port}: {e.Message}");
        }
    }

    public static string Percent(double? v) => v is { } x ? x.ToString("0.0%", CultureInfo.InvariantCulture) : "–";
}

/// <summary>Opening diffusion artifacts with one-line errors.</summary>
public static class DiffusionArtifacts
{
    public static DiffusionPipeline Open(Artifact model, string port = "model")
    {
        try
        {
            return DiffusionPipeline.Load(model.Path);
        }
        catch (CheckpointException e)
        {
            throw new ActivityException($"{port}: {e.Message}", e);
        }
    }

    public static ToyScorer? OpenScorer(Artifact? scorer)
    {
        if (scorer is null)
        {
            return null;
        }
        try
        {
            return ToyScorer.Load(scorer.Path);
        }
        catch (CheckpointException e)
        {
            throw new ActivityException($"scorer: {e.Message}", e);
        }
    }

    /// <summary>The prompts to use: the given ones, or for a toy model every colour × shape prompt.</summary>
    public static IReadOnlyList<string> Prompts(IReadOnlyList<string> list, string? one, DiffusionPipeline pipe)
    {
        var given = one is null ? list : list.Append(one).ToList();
        if (given.Count > 0)
        {
            return given;
        }
        return ToyDiffusionTrainer.WorldOf(pipe) is not null
            ? ToyWorld.ColourShapePrompts().Select(p => p.Prompt).ToList()
            : throw new ActivityException("inputs.prompts: expected at least one prompt (only toy models have default prompts)");
    }

    /// <summary>Rows (prompt, seed) for prompts × n samples: sample j of every prompt uses seed + j.</summary>
    public static List<(string Prompt, long Seed)> Rows(IReadOnlyList<string> prompts, int perPrompt, long seed) =>
        prompts.SelectMany(p => Enumerable.Range(0, perPrompt).Select(j => (p, seed + j))).ToList();

    /// <summary>Initial noise for rows with per-row seeds (so every sampler sees the same noise for the same row).</summary>
    public static Tensor Noise(DiffusionPipeline pipe, IReadOnlyList<(string Prompt, long Seed)> rows, int side) =>
        cat(rows.Select(r => pipe.InitialNoise(1, r.Seed, side, side)).ToList(), 0);
}
