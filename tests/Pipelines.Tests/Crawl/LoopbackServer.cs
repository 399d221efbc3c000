using System.Net;
using System.Text;

namespace Pipelines.Tests.Crawl;

/// <summary>A request a loopback server received.</summary>
public sealed record Received(string Method, string Path, Dictionary<string, string?> Headers, string Body);

/// <summary>What a loopback server answers: status, body and extra headers.</summary>
public sealed record Reply(int Status, string Body, Dictionary<string, string>? Headers = null);

/// <summary>A real HTTP server on 127.0.0.1 (HttpListener) that answers with a handler and records every request.</summary>
public sealed class LoopbackServer : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly Func<Received, Reply> _handler;
    private readonly Task _loop;

    public LoopbackServer(Func<Received, Reply> handler)
    {
        _handler = handler;
        var probe = new System.Net.Sockets.TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        Root = $"http://127.0.0.1:{port}";
        _listener.Prefixes.Add(Root + "/");
        _listener.Start();
        _loop = Task.Run(Serve);
    }

    /// <summary>The server's base URL, without a trailing slash.</summary>
    public string Root { get; }

    public List<Received> Requests { get; } = [];

    private async Task Serve()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try
            {
                ctx = await _listener.GetContextAsync();
            }
            catch (Exception) when (!_listener.IsListening)
            {
                return;
            }
            _ = Task.Run(async () =>
            {
                var body = await new StreamReader(ctx.Request.InputStream, Encoding.UTF8).ReadToEndAsync();
                var headers = ctx.Request.Headers.AllKeys.Where(k => k is not null).ToDictionary(k => k!.ToLowerInvariant(), k => ctx.Request.Headers[k]);
                var received = new Received(ctx.Request.HttpMethod, ctx.Request.Url!.AbsolutePath, headers, body);
                Reply reply;
                lock (Requests)
                {
                    Requests.Add(received);
                }
                try
                {
                    reply = _handler(received);
                }
                catch (Exception e)
                {
                    reply = new Reply(500, e.Message);
                }
                ctx.Response.StatusCode = reply.Status;
                foreach (var (k, v) in reply.Headers ?? [])
                {
                    ctx.Response.Headers[k] = v;
                }
                ctx.Response.ContentType = "application/json";
                var bytes = Encoding.UTF8.GetBytes(reply.Body);
                await ctx.Response.OutputStream.WriteAsync(bytes);
                ctx.Response.Close();
            });
        }
    }

    public void Dispose()
    {
        _listener.Stop();
        _listener.Close();
    }
}
