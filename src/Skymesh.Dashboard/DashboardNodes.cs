using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Http;

namespace Skymesh.Dashboard;

/// <summary>Another node the dashboard steers: its name on the page, its local API and the token that API takes.</summary>
public sealed record DashboardNode(string Name, string Api, string Token);

/// <summary>A node of the list as the page sees it (never its token).</summary>
/// <param name="Reachable">Whether its API answered just now.</param>
public sealed record DashboardNodeInfo(string Name, string Api, bool Reachable, string? Error);

/// <summary>
/// The other nodes one dashboard steers (a roof antenna, a home router, a laptop): kept in <c>dashboard-nodes.json</c> in
/// the serving node's data directory, readable by its owner only (it holds their tokens). The page reaches each through
/// the serving node — <c>/nodes/NAME/…</c> is passed to that node's API with its token — so the browser holds one sign-in
/// and no other node's token, and no other node needs to accept requests from a web page.
/// </summary>
public sealed partial class DashboardNodes : IDisposable
{
    public const string FileName = "dashboard-nodes.json";

    /// <summary>Nodes one dashboard lists at most.</summary>
    public const int Limit = 64;

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web) { WriteIndented = true };

    private readonly string _file;
    private readonly Lock _lock = new();
    private readonly HttpClient _http;
    private List<DashboardNode> _nodes;

    private readonly TimeProvider _time;

    public DashboardNodes(string dataDir, TimeProvider time)
    {
        _time = time ?? throw new ArgumentNullException(nameof(time));
        _file = Path.Combine(dataDir, FileName);
        _nodes = Load(_file);
        // Event streams through the proxy last as long as the page: no overall timeout, only one to connect.
        _http = new HttpClient(new SocketsHttpHandler { ConnectTimeout = TimeSpan.FromSeconds(5), UseProxy = false, AllowAutoRedirect = false })
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
    }

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")]
    private static partial Regex NamePattern();

    private static List<DashboardNode> Load(string file)
    {
        if (!File.Exists(file))
            return [];
        try
        {
            return JsonSerializer.Deserialize<List<DashboardNode>>(File.ReadAllBytes(file), Json) ?? [];
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{file} is not a list of nodes ({e.Message}); fix or remove it", e);
        }
    }

    public IReadOnlyList<DashboardNode> List()
    {
        lock (_lock)
            return [.. _nodes];
    }

    public DashboardNode? Find(string name)
    {
        lock (_lock)
            return _nodes.FirstOrDefault(n => string.Equals(n.Name, name, StringComparison.OrdinalIgnoreCase));
    }

    /// <summary>Adds a node, or replaces the one of that name; throws <see cref="ArgumentException"/> with a reason for people.</summary>
    public DashboardNode Add(string? name, string? api, string? token)
    {
        if (name is null || !NamePattern().IsMatch(name))
            throw new ArgumentException("\"name\" is 1 to 32 letters, digits, '.', '_' or '-', starting with a letter or digit");
        if (api is null || !IPEndPoint.TryParse(api.StartsWith("localhost:", StringComparison.OrdinalIgnoreCase) ? "127.0.0.1:" + api[10..] : api, out var endPoint) || endPoint.Port == 0)
            throw new ArgumentException("\"api\" is the node's local API as address:port, e.g. 192.168.1.20:7300 (an IP address: the API answers no host names)");
        if (string.IsNullOrWhiteSpace(token) || token.Length > 256 || token.Any(char.IsWhiteSpace))
            throw new ArgumentException("\"token\" is that node's API token (api.token in its data directory, or `skymesh dashboard` there)");
        var node = new DashboardNode(name, endPoint.ToString(), token);
        lock (_lock)
        {
            var others = _nodes.Where(n => !string.Equals(n.Name, name, StringComparison.OrdinalIgnoreCase)).ToList();
            if (others.Count >= Limit)
                throw new ArgumentException($"a dashboard lists at most {Limit} nodes");
            others.Add(node);
            Save(others);
            _nodes = others;
        }
        return node;
    }

    public bool Remove(string name)
    {
        lock (_lock)
        {
            var others = _nodes.Where(n => !string.Equals(n.Name, name, StringComparison.OrdinalIgnoreCase)).ToList();
            if (others.Count == _nodes.Count)
                return false;
            Save(others);
            _nodes = others;
            return true;
        }
    }

    private void Save(List<DashboardNode> nodes) => OwnerOnlyFile.Write(_file, stream => JsonSerializer.Serialize(stream, nodes, Json));

    /// <summary>Every node of the list and whether its API answers (each asked at once, for at most two seconds).</summary>
    public async Task<IReadOnlyList<DashboardNodeInfo>> ProbeAsync(CancellationToken cancellationToken)
    {
        var nodes = List();
        var probes = nodes.Select(async node =>
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(2), _time);
            using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Get, $"http://{node.Api}/api/node");
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", node.Token);
                using var response = await _http.SendAsync(request, deadline.Token);
                return new DashboardNodeInfo(node.Name, node.Api, response.IsSuccessStatusCode,
                    response.IsSuccessStatusCode ? null : response.StatusCode == HttpStatusCode.Unauthorized ? "wrong token" : $"HTTP {(int)response.StatusCode}");
            }
            catch (Exception e) when (e is HttpRequestException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
            {
                return new DashboardNodeInfo(node.Name, node.Api, false, e is OperationCanceledException ? "no answer within 2 s" : e.Message);
            }
        });
        return await Task.WhenAll(probes);
    }

    /// <summary>
    /// Passes a request of the page on to <paramref name="node"/>'s API: <paramref name="path"/> (from <c>/api/</c>) with the
    /// query, the method, a JSON body and <c>Last-Event-ID</c>; the answer comes back as it streams (event streams too).
    /// </summary>
    public async Task ProxyAsync(HttpContext context, DashboardNode node, string path)
    {
        ArgumentNullException.ThrowIfNull(context);
        ArgumentNullException.ThrowIfNull(node);
        var incoming = context.Request;
        var target = new Uri($"http://{node.Api}/{path.TrimStart('/')}{incoming.QueryString}");
        using var request = new HttpRequestMessage(new HttpMethod(incoming.Method), target);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", node.Token);
        if (incoming.Headers.TryGetValue("Last-Event-ID", out var lastEvent))
            request.Headers.TryAddWithoutValidation("Last-Event-ID", lastEvent.ToString());
        if (incoming.ContentLength > 0 || incoming.Headers.TransferEncoding.Count > 0)
        {
            var body = new MemoryStream();
            await incoming.Body.CopyToAsync(body, context.RequestAborted);
            body.Position = 0;
            request.Content = new StreamContent(body);
            if (incoming.ContentType is { } type)
                request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(type);
        }
        var response = context.Response;
        HttpResponseMessage answer;
        try
        {
            answer = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, context.RequestAborted);
        }
        catch (Exception e) when (e is HttpRequestException or OperationCanceledException && !context.RequestAborted.IsCancellationRequested)
        {
            response.StatusCode = StatusCodes.Status502BadGateway;
            await response.WriteAsJsonAsync(new { title = "Bad Gateway", status = 502, detail = $"node {node.Name} at {node.Api} does not answer: {e.Message}" },
                Json, "application/problem+json", context.RequestAborted);
            return;
        }
        using (answer)
        {
            response.StatusCode = (int)answer.StatusCode;
            if (answer.Content.Headers.ContentType is { } contentType)
                response.ContentType = contentType.ToString();
            if (answer.Headers.CacheControl is { } cache)
                response.Headers.CacheControl = cache.ToString();
            await using var stream = await answer.Content.ReadAsStreamAsync(context.RequestAborted);
            var buffer = new byte[16 * 1024];
            int read;
            try
            {
                while ((read = await stream.ReadAsync(buffer, context.RequestAborted)) > 0)
                {
                    await response.Body.WriteAsync(buffer.AsMemory(0, read), context.RequestAborted);
                    await response.Body.FlushAsync(context.RequestAborted);
                }
            }
            catch (Exception e) when (e is IOException or HttpRequestException or OperationCanceledException)
            {
                // The page or the node went away: the stream ends here.
            }
        }
    }

    public void Dispose() => _http.Dispose();
}

/// <summary>Files that hold secrets or an owner's decisions: readable by the owner only, and never seen half written.</summary>
public static class OwnerOnlyFile
{
    /// <summary>Writes <paramref name="file"/> whole: a new file (mode 0600) flushed to disk, then renamed over the old one.</summary>
    public static void Write(string file, Action<Stream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        var directory = Path.GetDirectoryName(Path.GetFullPath(file))!;
        Directory.CreateDirectory(directory);
        var temporary = Path.Combine(directory, $".{Path.GetFileName(file)}.{Environment.ProcessId}.tmp");
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var stream = new FileStream(temporary, options))
        {
            write(stream);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temporary, file, overwrite: true);
    }
}
