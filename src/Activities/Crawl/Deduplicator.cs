namespace Pipelines.Activities.Crawl;

/// <summary>How new topics are matched to known ones (research §A.6).</summary>
public enum DedupMode { Exact, Embedding }

/// <summary>
/// Greedy online clustering of topics into heads. <c>Exact</c>: a topic is a duplicate when its normalised text equals
/// a head's (the 2026 code's rule). <c>Embedding</c>: when its cosine similarity to the nearest head reaches the
/// threshold (the paper's rule, 0.62 for e5; calibrate per embedder). A new head joins the list at once, so topics of
/// one batch are deduplicated against each other too.
/// </summary>
public sealed class TopicDeduplicator(DedupMode mode, double threshold)
{
    private readonly Dictionary<string, int> _exact = new(StringComparer.Ordinal);
    private readonly List<float[]> _embeddings = [];

    public DedupMode Mode => mode;
    public double Threshold => threshold;

    /// <summary>The heads in order: (cluster id = index) normalised text.</summary>
    public List<string> Heads { get; } = [];

    /// <summary>Their embeddings (Embedding mode), in the same order; saved with the crawl's state.</summary>
    public IReadOnlyList<float[]> Embeddings => _embeddings;

    /// <summary>Assigns a topic: a new head (its own cluster) or a member of the nearest head's cluster.</summary>
    public (bool IsHead, int ClusterId, double Similarity) Assign(string normalized, float[]? embedding)
    {
        if (mode == DedupMode.Exact)
        {
            if (_exact.TryGetValue(normalized, out var cluster))
            {
                return (false, cluster, 1);
            }
            return (true, Add(normalized, null), 0);
        }
        if (embedding is null)
        {
            throw new ArgumentException("embedding dedup needs the topic's embedding", nameof(embedding));
        }
        var best = -1;
        var similarity = double.NegativeInfinity;
        for (var i = 0; i < _embeddings.Count; i++)
        {
            var s = Vectors.Dot(embedding, _embeddings[i]);
            if (s > similarity)
            {
                (best, similarity) = (i, s);
            }
        }
        if (best >= 0 && similarity >= threshold)
        {
            return (false, best, similarity);
        }
        return (true, Add(normalized, embedding), best >= 0 ? similarity : 0);
    }

    /// <summary>Re-adds a head from a saved state (resume), in its original order.</summary>
    public int Add(string normalized, float[]? embedding)
    {
        var id = Heads.Count;
        Heads.Add(normalized);
        _exact.TryAdd(normalized, id);
        if (embedding is not null)
        {
            _embeddings.Add(embedding);
        }
        return id;
    }
}
