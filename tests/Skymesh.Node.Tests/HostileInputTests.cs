using System.Net;
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
    [InlineData("/api/ping", """{ "to": "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9" }""", 404, "no working path")]
    [InlineData("/api/forwards", """{ "listen": "127.0.0.1:0", "to": "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9", "target": "nowhere" }""", 400, "not host:port")]
    [InlineData("/api/paths", "null", 400, "empty")]
    public async Task Bad_api_requests_get_a_status_and_a_reason(string path, string body, int status, string reason)
    {
        await using var chain = await Chain.StartAsync(2);
        using var http = new HttpClient { BaseAddress = new Uri($"http://{chain.Source.Api.EndPoint}") };
        using var response = await http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"), Ct);
        var text = await response.Content.ReadAsStringAsync(Ct);
        Assert.Equal(status, (int)response.StatusCode);
        var error = System.Text.Json.JsonDocument.Parse(text).RootElement.GetProperty("error").GetString();
        Assert.Contains(reason, error, StringComparison.Ordinal);
        // The node is unharmed.
        Assert.Single(await chain.Source.Client.PathsAsync(Ct));
    }

    [Fact]
    public async Task Unknown_ids_are_not_found()
    {
        await using var chain = await Chain.StartAsync(2);
        using var http = new HttpClient { BaseAddress = new Uri($"http://{chain.Source.Api.EndPoint}") };
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("/api/paths/77", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("/api/labels/1/4000", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("/api/apps/5", Ct)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("/api/links/42", Ct)).StatusCode);
    }
}
