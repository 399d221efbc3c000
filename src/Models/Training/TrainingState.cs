using System.Globalization;
using System.Text.Json.Nodes;
using Pipelines.Models.Checkpoints;
using Pipelines.Models.Transformer;
using Pipelines.Models.Runtime;

namespace Pipelines.Models.Training;

/// <summary>
/// A saved training state in a resume directory: <c>state/</c> holds the weights (an HF checkpoint), the AdamW
/// moments (<c>adamw.bin</c>, <see cref="StableAdamW.Save"/>) and <c>state.json</c> (step, loss). Written beside and swapped in by renames, so a
/// kill at any moment leaves either the previous save or the new one, never a torn one.
/// </summary>
public sealed record TrainingState(string Directory, int Step, double Loss)
{
    private const string Current = "state", Next = "state.next", Previous = "state.previous", Meta = "state.json", Moments = "adamw.bin";

    /// <summary>The last complete save, or null when there is none.</summary>
    public static TrainingState? TryRead(string resumeDirectory)
    {
        foreach (var name in new[] { Current, Previous })
        {
            var dir = Path.Combine(resumeDirectory, name);
            var meta = Path.Combine(dir, Meta);
            if (!File.Exists(meta) || !File.Exists(Path.Combine(dir, Moments)))
            {
                continue;
            }
            try
            {
                var json = JsonNode.Parse(File.ReadAllText(meta))!.AsObject();
                var loss = json["loss"]?.GetValue<double?>() ?? double.NaN;
                return new TrainingState(dir, json["step"]!.GetValue<int>(), loss);
            }
            catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or NullReferenceException or FormatException)
            {
                // A torn or foreign file: fall back to the previous save, else start over.
            }
        }
        return null;
    }

    public void LoadOptimizer(StableAdamW optimizer) => optimizer.Load(Path.Combine(Directory, Moments));

    /// <summary>Saves weights, optimizer moments and the step, then swaps the new save in.</summary>
    public static void Write(string resumeDirectory, HookedTransformer model, StableAdamW optimizer, int step, double loss)
    {
        var next = Path.Combine(resumeDirectory, Next);
        if (System.IO.Directory.Exists(next))
        {
            System.IO.Directory.Delete(next, recursive: true);
        }
        Checkpoint.Save(model, next);
        optimizer.Save(Path.Combine(next, Moments));
        File.WriteAllText(Path.Combine(next, Meta), new JsonObject
        {
            ["step"] = step,
            ["loss"] = double.IsFinite(loss) ? loss : null,
            ["savedAt"] = DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture),
        }.ToJsonString());
        var current = Path.Combine(resumeDirectory, Current);
        var previous = Path.Combine(resumeDirectory, Previous);
        if (System.IO.Directory.Exists(previous))
        {
            System.IO.Directory.Delete(previous, recursive: true);
        }
        if (System.IO.Directory.Exists(current))
        {
            System.IO.Directory.Move(current, previous);
        }
        System.IO.Directory.Move(next, current);
        if (System.IO.Directory.Exists(previous))
        {
            System.IO.Directory.Delete(previous, recursive: true);
        }
    }
}
