using Pipelines.Engine.Artifacts;

namespace Pipelines.Engine.Ledger;

/// <summary>One output compared between a run and its reproduction; a step that left no outputs on either side is one row with no port.</summary>
public sealed record DigestComparison(string StepId, string? Output, string? Original, string? Reproduced, string ReproducedStatus)
{
    public bool Match => Original is not null && Original == Reproduced;
}

/// <summary>A reproduction's verdict: every output digest of the original against the recomputed one.</summary>
public static class Reproduction
{
    public static IReadOnlyList<DigestComparison> Compare(IEnumerable<StepRecord> original, IEnumerable<StepRecord> reproduced)
    {
        var before = original.ToDictionary(s => s.StepId, StringComparer.Ordinal);
        var rows = new List<DigestComparison>();
        foreach (var step in reproduced)
        {
            var old = before.GetValueOrDefault(step.StepId)?.Outputs ?? (IReadOnlyDictionary<string, OutputRecord>)new Dictionary<string, OutputRecord>();
            var now = step.Outputs ?? (IReadOnlyDictionary<string, OutputRecord>)new Dictionary<string, OutputRecord>();
            var status = step.Status.ToString().ToLowerInvariant();
            foreach (var port in old.Keys.Union(now.Keys).Order(StringComparer.Ordinal))
            {
                rows.Add(new DigestComparison(step.StepId, port, old.GetValueOrDefault(port)?.Digest, now.GetValueOrDefault(port)?.Digest, status));
            }
            if (old.Count == 0 && now.Count == 0)
            {
                rows.Add(new DigestComparison(step.StepId, null, null, null, status));
            }
        }
        return rows;
    }
}
