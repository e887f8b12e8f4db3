using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Skymesh.Exchange.Tests.Chains;

/// <summary>An error a fake method answers with, as Bitcoin Core would (code and message).</summary>
internal sealed class FakeRpcError(int code, string message) : Exception(message)
{
    public int Code { get; } = code;
}

/// <summary>
/// A recorded-response stand-in for Bitcoin Core's JSON-RPC server, on a free loopback port: each method answers with
/// a reply shaped as Bitcoin Core 27 documents it (set per test in <see cref="Methods"/>), after checking the path (the
/// wallet's URL) and the basic-auth header. Errors come back as JSON-RPC 1.0 errors do: HTTP 500 with
/// <c>{"result":null,"error":{"code":..,"message":..},"id":..}</c>. It can be told to fail: HTTP 500 with an HTML page,
/// or every call answered -28 (warming up).
/// </summary>
internal sealed class FakeBitcoinCore : IAsyncDisposable
{
    private readonly HttpListener _listener = new();
    private readonly Task _loop;
    private readonly string _expectedAuthorization;

    public FakeBitcoinCore(string wallet, string user, string password)
    {
        WalletPath = wallet.Length == 0 ? "/" : "/wallet/" + wallet;
        _expectedAuthorization = "Basic " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}"));
        for (var attempt = 0; ; attempt++)
        {
            var port = FreePort();
            _listener.Prefixes.Clear();
            _listener.Prefixes.Add($"http://127.0.0.1:{port}/");
            try
            {
                _listener.Start();
                Url = new Uri($"http://127.0.0.1:{port}/");
                break;
            }
            catch (HttpListenerException) when (attempt < 10)
            {
                // Someone took the port between our look and our listen: take another.
            }
        }
        _loop = ServeAsync();
    }

    public Uri Url { get; } = null!;

    public string WalletPath { get; }

    /// <summary>The answer of each method to its params: a result, or a thrown <see cref="FakeRpcError"/>.</summary>
    public ConcurrentDictionary<string, Func<JsonElement, JsonNode?>> Methods { get; } = new();

    /// <summary>Every call answered, in order: method and params.</summary>
    public ConcurrentQueue<(string Method, JsonElement Params)> Calls { get; } = new();

    public FailureMode Failure { get; set; }

    public enum FailureMode
    {
        None,
        Http500,
        WarmingUp,
    }

    public IEnumerable<JsonElement> CallsOf(string method) => Calls.Where(c => c.Method == method).Select(c => c.Params);

    /// <summary>Answers <paramref name="method"/> with the recorded JSON <paramref name="result"/>, whatever the params.</summary>
    public void Answer(string method, string result) => Methods[method] = _ => JsonNode.Parse(result);

    public void Fail(string method, int code, string message) => Methods[method] = _ => throw new FakeRpcError(code, message);

    private async Task ServeAsync()
    {
        while (true)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }
            try
            {
                await HandleAsync(context);
            }
            catch (Exception e) when (e is HttpListenerException or IOException)
            {
                // The client went away.
            }
        }
    }

    private async Task HandleAsync(HttpListenerContext context)
    {
        using var response = context.Response;
        // One connection per call: HttpListener may drop a kept-alive connection between calls, and a client that reused
        // it would see the answer end early — a fault of this stand-in, not of the adapter under test.
        response.KeepAlive = false;
        if (context.Request.Headers["Authorization"] != _expectedAuthorization)
        {
            // bitcoind answers wrong credentials with 401 and an empty body.
            response.StatusCode = 401;
            response.AddHeader("WWW-Authenticate", "Basic realm=\"jsonrpc\"");
            return;
        }
        if (context.Request.HttpMethod != "POST" || context.Request.Url!.AbsolutePath != WalletPath)
        {
            response.StatusCode = 404;
            return;
        }
        if (Failure == FailureMode.Http500)
        {
            response.StatusCode = 500;
            response.ContentType = "text/html";
            await response.OutputStream.WriteAsync("<html><body>Internal Server Error</body></html>"u8.ToArray());
            return;
        }
        using var body = await JsonDocument.ParseAsync(context.Request.InputStream);
        var request = body.RootElement;
        var method = request.GetProperty("method").GetString()!;
        var parameters = request.TryGetProperty("params", out var p) ? p.Clone() : JsonDocument.Parse("[]").RootElement;
        var id = request.GetProperty("id").Clone();
        Calls.Enqueue((method, parameters));
        JsonObject reply;
        var status = 200;
        try
        {
            if (Failure == FailureMode.WarmingUp)
                throw new FakeRpcError(-28, "Loading block index…");
            if (!Methods.TryGetValue(method, out var handler))
                throw new FakeRpcError(-32601, "Method not found");
            reply = new JsonObject { ["result"] = handler(parameters), ["error"] = null, ["id"] = JsonNode.Parse(id.GetRawText()) };
        }
        catch (FakeRpcError e)
        {
            status = e.Code == -32601 ? 404 : 500;
            reply = new JsonObject
            {
                ["result"] = null,
                ["error"] = new JsonObject { ["code"] = e.Code, ["message"] = e.Message },
                ["id"] = JsonNode.Parse(id.GetRawText()),
            };
        }
        response.StatusCode = status;
        response.ContentType = "application/json";
        await response.OutputStream.WriteAsync(Encoding.UTF8.GetBytes(reply.ToJsonString() + "\n"));
    }

    /// <summary>A loopback port nothing listens on (for "connection refused").</summary>
    public static int FreePort()
    {
        using var socket = new TcpListener(IPAddress.Loopback, 0);
        socket.Start();
        return ((IPEndPoint)socket.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        _listener.Stop();
        _listener.Close();
        await _loop;
    }
}
