using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;

namespace Skymesh.Node.Tests;

public class HostileInputTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Random_datagrams_at_a_node_are_counted_and_its_path_keeps_working()
    {
        await using var chain = await Chain.StartAsync(3);
        var relay = chain.Nodes[1];
        using var noise = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        noise.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var rng = new Random(7);
        for (var i = 0; i < 2000; i++)
        {
            var datagram = new byte[rng.Next(1, 1500)];
            rng.NextBytes(datagram);
            if (i % 4 == 0 && datagram.Length > 1)
                datagram[0] = 0x53; // looks like a frame marker: gets further into the parser
            noise.SendTo(datagram, relay.UdpEndPoint);
        }

        // The path through the relay still answers, and the relay counted what it threw away.
        var reply = await chain.Source.Client.PingAsync(chain.Destination.Address, cancellationToken: Ct);
        Assert.True(reply.RttMicroseconds > 0);
        var status = await relay.Client.StatusAsync(Ct);
        Assert.True(status.BadFrames > 0, "garbage must be counted as bad frames");
        Assert.Equal(2, status.Links);
    }

    [Theory]
    [InlineData("/api/paths", "{ not json", 400, "bad JSON")]
    [InlineData("/api/paths", "{}", 400, "\"peer\" is missing")]
    [InlineData("/api/paths", """{ "peer": "zz", "via": "zz", "outLabel": 1, "nonce": "00" }""", 400, "not a node address")]
    [InlineData("/api/labels", """{ "link": "99" }""", 404, "no link 99 is up")]
    [InlineData("/api/labels", """{ "link": "1", "forward": { "link": "1", "label": 5 } }""", 400, "back onto the link it came from")]
    [InlineData("/api/ping", """{ "to": "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9" }""", 404, "no path to")]
    [InlineData("/api/forwards", """{ "listen": "127.0.0.1:0", "to": "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9", "target": "nowhere" }""", 400, "not host:port")]
    [InlineData("/api/paths", "null", 400, "empty")]
    public async Task Bad_api_requests_get_a_status_and_a_reason(string path, string body, int status, string reason)
    {
        await using var chain = await Chain.StartAsync(2);
        using var http = Owner(chain.Source.Api);
        using var response = await http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"), Ct);
        var text = await response.Content.ReadAsStringAsync(Ct);
        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = System.Text.Json.JsonDocument.Parse(text).RootElement;
        Assert.Equal(status, problem.GetProperty("status").GetInt32());
        var error = problem.GetProperty("detail").GetString();
        Assert.Contains(reason, error, StringComparison.Ordinal);
        // The node is unharmed.
        Assert.Single(await chain.Source.Client.PathsAsync(Ct));
    }

    [Fact]
    public async Task Unknown_ids_are_not_found()
    {
        await using var chain = await Chain.StartAsync(2);
        using var http = Owner(chain.Source.Api);
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("/api/paths/77", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("/api/labels/1/4000", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("/api/apps/5", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("/api/links/42", Ct)).StatusCode);
    }

    /// <summary>An HTTP client as the node's owner: the API's address, and the token from the data directory.</summary>
    private static HttpClient Owner(NodeApi api)
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://{api.EndPoint}") };
        var token = File.ReadAllText(Path.Combine(api.Node.Options.DataDir, ApiToken.FileName)).Trim();
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", token);
        return http;
    }

    /// <summary>A request that would start a port forward on the node — what a hostile page would want most.</summary>
    /// <summary>A request that starts a port forward from the chain's source to its destination, over the path between them.</summary>
    private static HttpRequestMessage StartForward(Chain chain, string contentType = "application/json") => new(HttpMethod.Post, $"http://{chain.Source.Api.EndPoint}/api/forwards")
    {
        Content = new StringContent($$"""{ "listen": "127.0.0.1:0", "to": "{{chain.Destination.Address}}", "target": "127.0.0.1:9", "detach": true }""", Encoding.UTF8, contentType),
    };

    [Fact]
    public async Task Only_the_owner_can_drive_the_local_api()
    {
        await using var chain = await Chain.StartAsync(2);
        var api = chain.Source.Api;
        using var stranger = new HttpClient();
        using var owner = Owner(api);

        // No token, a wrong token: 401, and the node starts nothing.
        using (var response = await stranger.SendAsync(StartForward(chain), Ct))
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        using (var request = StartForward(chain))
        {
            request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", new string('0', 64));
            using var response = await stranger.SendAsync(request, Ct);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        }
        // With the token but a foreign Host (DNS rebinding), a foreign Origin (a web page), or a body a browser
        // may post without asking (text/plain): 403, 403, 415.
        using (var request = StartForward(chain))
        {
            request.Headers.Host = $"evil.example:{api.EndPoint.Port}";
            using var response = await owner.SendAsync(request, Ct);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        }
        using (var request = StartForward(chain))
        {
            request.Headers.Add("Origin", "http://evil.example");
            using var response = await owner.SendAsync(request, Ct);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        }
        using (var response = await owner.SendAsync(StartForward(chain, "text/plain"), Ct))
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        Assert.Empty(await owner.GetFromJsonAsync<List<AppInfo>>("/api/apps", NodeApi.Json, Ct) ?? []);

        // Reading is refused too without the token; metrics and the health check are open.
        Assert.Equal(HttpStatusCode.Unauthorized, (await stranger.GetAsync($"http://{api.EndPoint}/api/node", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await stranger.GetAsync($"http://{api.EndPoint}/metrics", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await stranger.GetAsync($"http://{api.EndPoint}/healthz", Ct)).StatusCode);

        // The owner, with the same request from its own origin: the forward starts.
        using (var request = StartForward(chain))
        {
            request.Headers.Add("Origin", $"http://{api.EndPoint}");
            using var response = await owner.SendAsync(request, Ct);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        Assert.Single(await owner.GetFromJsonAsync<List<AppInfo>>("/api/apps", NodeApi.Json, Ct) ?? []);

        // The token file is the owner's alone.
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(api.Node.Options.DataDir, ApiToken.FileName)));
    }

    [Fact]
    public async Task Oversized_bodies_are_refused_with_413_and_the_node_keeps_no_memory_of_them()
    {
        await using var chain = await Chain.StartAsync(2);
        using var owner = Owner(chain.Source.Api);
        var api = chain.Source.Api;
        var token = File.ReadAllText(Path.Combine(api.Node.Options.DataDir, ApiToken.FileName)).Trim();
        var chunk = new byte[1024 * 1024];
        Array.Fill(chunk, (byte)' ');
        GC.Collect();
        var before = GC.GetTotalMemory(forceFullCollection: true);
        for (var i = 0; i < 8; i++)
        {
            // A raw client, as an attacker would be: it declares 25 MB and sends as much as the node takes.
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(api.EndPoint, Ct);
            await socket.SendAsync(Encoding.ASCII.GetBytes(
                $"POST /api/paths HTTP/1.1\r\nHost: {api.EndPoint}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {25 * 1024 * 1024}\r\n\r\n"), Ct);
            try
            {
                for (var sent = 0; sent < 25; sent++)
                    await socket.SendAsync(chunk, Ct);
            }
            catch (SocketException)
            {
                // The node stopped reading and closed: what a refusal looks like from here.
            }
            var answer = new byte[4096];
            var n = await socket.ReceiveAsync(answer, Ct);
            Assert.StartsWith("HTTP/1.1 413", Encoding.ASCII.GetString(answer, 0, n), StringComparison.Ordinal);
        }
        // 8 × 25 MB offered; the node (this process) holds nothing of it beyond noise.
        var after = GC.GetTotalMemory(forceFullCollection: true);
        Assert.True(after - before < 16L * 1024 * 1024, $"managed memory grew by {(after - before) / 1e6:0.0} MB");
        Assert.Single(await chain.Source.Client.PathsAsync(Ct));
    }

    [Fact]
    public async Task Apps_beyond_the_nodes_limit_are_refused_with_a_clear_error()
    {
        await using var chain = await Chain.StartAsync(2, maxApps: 2);
        var node = chain.Source;
        using var owner = Owner(node.Api);
        for (var i = 0; i < 2; i++)
        {
            using var response = await owner.SendAsync(StartForward(chain), Ct);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
        using (var response = await owner.SendAsync(StartForward(chain), Ct))
        {
            Assert.Equal((HttpStatusCode)429, response.StatusCode);
            Assert.Contains("maxApps", await response.Content.ReadAsStringAsync(Ct), StringComparison.Ordinal);
        }
        Assert.Equal(2, (await owner.GetFromJsonAsync<List<AppInfo>>("/api/apps", NodeApi.Json, Ct) ?? []).Count);
    }
}
