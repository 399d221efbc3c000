using Pipelines.Models.Checkpoints;
using Pipelines.Models.Runtime;
using static TorchSharp.torch;

namespace Pipelines.Activities.Circuits;

/// <summary>Positional scores in a Scores artifact: <c>positional.safetensors</c> beside the aggregate scores.</summary>
public static class PositionalScoresFile
{
    public const string FileName = "positional.safetensors";

    public static void Write(string directory, PositionalScores scores, double scale)
    {
        var tensors = new List<(string, Tensor)>();
        foreach (var s in PositionalScores.Statistics)
        {
            tensors.Add(($"noncrossing.{s}", scores.NonCrossing[s].mul(Scalars.Of(scale)).to(ScalarType.Float32).cpu()));
            tensors.Add(($"crossing.{s}", scores.Crossing[s].mul(Scalars.Of(scale)).to(ScalarType.Float32).cpu()));
        }
        SafetensorsFile.Write(Path.Combine(directory, FileName), tensors);
    }

    public static bool Exists(string directory) => File.Exists(Path.Combine(directory, FileName));

    public static PositionalGrid Read(string directory, IReadOnlyList<string> spans, string statistic)
    {
        if (!PositionalScores.Statistics.Contains(statistic))
        {
            throw new Engine.Activities.ActivityException($"unknown statistic \"{statistic}\"; expected one of {string.Join(", ", PositionalScores.Statistics)}");
        }
        using var file = SafetensorsFile.Open(Path.Combine(directory, FileName));
        using var nc = file.Read($"noncrossing.{statistic}");
        using var cr = file.Read($"crossing.{statistic}");
        var a = new float[nc.shape[0], nc.shape[1], nc.shape[2]];
        Buffer.BlockCopy(nc.data<float>().ToArray(), 0, a, 0, a.Length * sizeof(float));
        var b = new float[cr.shape[0], cr.shape[1], cr.shape[2], cr.shape[3]];
        Buffer.BlockCopy(cr.data<float>().ToArray(), 0, b, 0, b.Length * sizeof(float));
        return new PositionalGrid(a, b, spans, statistic);
    }
}
