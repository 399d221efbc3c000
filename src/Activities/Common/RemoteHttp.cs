using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using Pipelines.Engine.Activities;

namespace Pipelines.Activities;

/// <summary>
/// JSON POSTs to a remote model server with the rules every remote backend shares: 401 and 403 fail the step at once
/// (never a silent empty result), 429 and 5xx are retried with exponential backoff honouring <c>Retry-After</c>, a
/// body that is not the expected JSON fails with the start of it, and at most <c>concurrency</c> requests are in
/// flight. Messages name the endpoint, never a key. Counts requests and retries for the stats.
/// </summary>
public sealed class RemoteHttp(HttpClient http, int concurrency = 4, int maxAttempts = 6, TimeSpan? baseDelay = null) : IDisposable
{
    private readonly SemaphoreSlim _gate = new(Math.Max(1, concurrency));
    private readonly TimeSpan _baseDelay = baseDelay ?? TimeSpan.FromSeconds(1);
    private long _requests, _retries;

    public long Requests => Interlocked.Read(ref _requests);
    public long Retries => Interlocked.Read(ref _retries);

    /// <summary>The longest wait a server's <c>Retry-After</c> may ask for.</summary>
    public static readonly TimeSpan MaxRetryAfter = TimeSpan.FromMinutes(2);

    public async Task<JsonObject> PostJsonAsync(Uri url, JsonObject body, Action<HttpRequestMessage> headers, string keyVariable, CancellationToken ct)
    {
        await _gate.WaitAsync(ct);
        try
        {
            for (var attempt = 1; ; attempt++)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, url) { Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json") };
                headers(request);
                Interlocked.Increment(ref _requests);
                HttpResponseMessage response;
                try
                {
                    response = await http.SendAsync(request, ct);
                }
                catch (HttpRequestException e) when (attempt < maxAttempts)
                {
                    _ = e;
                    Interlocked.Increment(ref _retries);
                    await Task.Delay(Backoff(attempt, null), ct);
                    continue;
                }
                catch (HttpRequestException e)
                {
                    throw new ActivityException($"{url}: {e.Message}");
                }
                catch (TaskCanceledException) when (!ct.IsCancellationRequested)
                {
                    throw new ActivityException($"{url}: no answer within {http.Timeout.TotalSeconds:0} s");
                }
                using (response)
                {
                    var status = (int)response.StatusCode;
                    if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
                    {
                        throw new ActivityException($"{url}: HTTP {status} {response.ReasonPhrase}: the server refused the credentials; check the key in ${keyVariable}");
                    }
                    var text = await response.Content.ReadAsStringAsync(ct);
                    if ((status == 429 || status >= 500) && attempt < maxAttempts)
                    {
                        Interlocked.Increment(ref _retries);
                        await Task.Delay(Backoff(attempt, response.Headers.RetryAfter), ct);
                        continue;
                    }
                    if (!response.IsSuccessStatusCode)
                    {
                        throw new ActivityException($"{url}: HTTP {status} after {attempt} attempt(s): {Start(text)}");
                    }
                    try
                    {
                        return JsonNode.Parse(text) as JsonObject ?? throw new FormatException("not a JSON object");
                    }
                    catch (Exception e) when (e is System.Text.Json.JsonException or FormatException)
                    {
                        throw new ActivityException($"{url}: a malformed response (expected a JSON object): {Start(text)}");
                    }
                }
            }
        }
        finally
        {
            _gate.Release();
        }
    }

    private TimeSpan Backoff(int attempt, System.Net.Http.Headers.RetryConditionHeaderValue? retryAfter)
    {
        var asked = retryAfter?.Delta ?? (retryAfter?.Date is { } date ? date - DateTimeOffset.UtcNow : null);
        if (asked is { } wait && wait > TimeSpan.Zero)
        {
            return wait < MaxRetryAfter ? wait : MaxRetryAfter;
        }
        return _baseDelay * Math.Pow(2, attempt - 1);
    }

    private static string Start(string text)
    {
        var oneLine = text.ReplaceLineEndings(" ");
        return oneLine.Length <= 200 ? oneLine : oneLine[..200] + "…";
    }

    public void Dispose() => _gate.Dispose();
}
