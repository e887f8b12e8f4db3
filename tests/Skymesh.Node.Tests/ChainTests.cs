using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using Skymesh.Mesh.Paths;

namespace Skymesh.Node.Tests;

/// <summary>Nodes on real loopback UDP with a static path through relays, driven through their local APIs.</summary>
public class ChainTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Theory]
    [InlineData("udp")]
    [InlineData("tcp")]
    public async Task A_four_node_chain_carries_a_forwarded_tcp_stream_byte_for_byte(string kind)
    {
        await using var chain = await Chain.StartAsync(4, kind);
        await using var echo = TcpTarget.Echo();
        var (_, forwarder) = chain.Source.Node.StartForward(new IPEndPoint(IPAddress.Loopback, 0), chain.Destination.Node.Address, echo.Target);

        var data = RandomNumberGenerator.GetBytes(8 << 20);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(forwarder.LocalEndPoint, Ct);
        var send = Task.Run(async () =>
        {
            for (var offset = 0; offset < data.Length; offset += 100_000)
                await client.SendAsync(data.AsMemory(offset, Math.Min(100_000, data.Length - offset)), SocketFlags.None, Ct);
            client.Shutdown(SocketShutdown.Send);
        }, Ct);
        var received = new MemoryStream();
        var buffer = new byte[65536];
        while (true)
        {
            var n = await client.ReceiveAsync(buffer, SocketFlags.None, Ct).AsTask().WaitAsync(Bound, Ct);
            if (n == 0)
                break;
            received.Write(buffer, 0, n);
        }
        await send.WaitAsync(Bound, Ct);
        Assert.Equal(data.Length, received.Length);
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(received.ToArray()));

        // Both relays switched the traffic; the ends delivered it; nobody saw bad frames.
        foreach (var relay in chain.Nodes[1..^1])
        {
            var metrics = await relay.Client.MetricsAsync(Ct);
            Assert.True(Sample(metrics, "skymesh_forwarded_messages_total") > 2 * data.Length / 65536.0, metrics);
            Assert.Equal(0, Sample(metrics, "skymesh_bad_frames_total"));
        }
        Assert.Equal(1, chain.Destination.Node.Exit.Served);
        Assert.Equal(data.Length, chain.Destination.Node.Exit.BytesToTargets);
    }

    [Fact]
    public async Task Ping_crosses_the_path_and_a_node_without_a_path_is_a_clear_error()
    {
        await using var chain = await Chain.StartAsync(3);
        var reply = await chain.Source.Client.PingAsync(chain.Destination.Address, cancellationToken: Ct);
        Assert.Equal(chain.Destination.Address, reply.To);
        Assert.InRange(reply.RttMicroseconds, 1, 2_000_000);
        Assert.Equal(1, chain.Destination.Node.PingsAnswered);

        // The destination has the other end of the path, so it can ping back.
        var back = await chain.Destination.Client.PingAsync(chain.Source.Address, cancellationToken: Ct);
        Assert.True(back.RttMicroseconds > 0);

        var error = await Assert.ThrowsAsync<NodeApiException>(() => chain.Source.Client.PingAsync(chain.Nodes[1].Address, cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.NotFound, error.Status);
        Assert.Contains("no path to", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Http_through_socks_reaches_a_target_from_the_exit_node_and_the_exit_policy_holds()
    {
        await using var chain = await Chain.StartAsync(3);
        await using var web = TcpTarget.Http("hello through the mesh");
        var (_, socks) = chain.Source.Node.StartSocks(new IPEndPoint(IPAddress.Loopback, 0), chain.Destination.Node.Address);
        using var http = new HttpClient(new SocketsHttpHandler { Proxy = new WebProxy($"socks5://{socks.LocalEndPoint}"), UseProxy = true })
        {
            Timeout = Bound,
        };
        Assert.Equal("hello through the mesh", await http.GetStringAsync($"http://{web.Target}/", Ct));
        Assert.Equal(1, chain.Destination.Node.Exit.Served);

        // The exit allows only 127.0.0.1: another target is refused there, and the SOCKS client hears it.
        var ended = new TaskCompletionSource<Skymesh.Mesh.Apps.AppConnection>(TaskCreationOptions.RunContinuationsAsynchronously);
        socks.ConnectionEnded += c =>
        {
            if (c.Target.StartsWith("10.255.255.1", StringComparison.Ordinal))
                ended.TrySetResult(c);
        };
        await Assert.ThrowsAsync<HttpRequestException>(() => http.GetStringAsync("http://10.255.255.1:81/", Ct));
        var refused = await ended.Task.WaitAsync(Bound, Ct);
        Assert.Equal("refused", refused.Error);
        Assert.Equal(1, chain.Destination.Node.Exit.Refused);
        Assert.Equal(2, socks.Accepted);
        Assert.Equal(1, socks.Failed);
    }

    [Fact]
    public async Task A_relay_that_dies_mid_transfer_ends_the_app_connection_with_an_error_not_a_hang()
    {
        await using var chain = await Chain.StartAsync(4);
        await using var echo = TcpTarget.Echo();
        var (_, forwarder) = chain.Source.Node.StartForward(new IPEndPoint(IPAddress.Loopback, 0), chain.Destination.Node.Address, echo.Target);
        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(forwarder.LocalEndPoint, Ct);
        var chunk = RandomNumberGenerator.GetBytes(64 * 1024);
        var buffer = new byte[chunk.Length];

        // Traffic flows first.
        await client.SendAsync(chunk, SocketFlags.None, Ct);
        var got = 0;
        while (got < chunk.Length)
            got += await client.ReceiveAsync(buffer.AsMemory(got), SocketFlags.None, Ct).AsTask().WaitAsync(Bound, Ct);

        await chain.Nodes[2].DisposeAsync();

        // The app keeps sending; within the path timeout its connection fails (reset or closed early).
        var failed = Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    await client.SendAsync(chunk, SocketFlags.None, Ct);
                    var n = await client.ReceiveAsync(buffer, SocketFlags.None, Ct);
                    if (n == 0)
                        return "closed";
                }
            }
            catch (SocketException e)
            {
                return e.SocketErrorCode.ToString();
            }
        }, Ct);
        var outcome = await failed.WaitAsync(Bound, Ct);
        Assert.Contains(outcome, new[] { "ConnectionReset", "closed", "Shutdown", "ConnectionAborted" });
        var path = Assert.Single(await chain.Source.Client.PathsAsync(Ct));
        Assert.Equal("broken", path.State);
        Assert.Contains("lost", path.Error, StringComparison.Ordinal);
        Assert.True(forwarder.Failed >= 1);
    }

    [Fact]
    public async Task Direct_neighbours_share_a_one_hop_path_with_streams_both_ways()
    {
        await using var chain = await Chain.StartAsync(2);
        var there = chain.Source.Node.FindPath(chain.Destination.Node.Address);
        var back = chain.Destination.Node.FindPath(chain.Source.Node.Address);
        Assert.NotNull(there);
        Assert.NotNull(back);
        Assert.True(there.IsEncrypted);

        // The destination's exit refuses what its policy does not allow, with a clear reason.
        var refused = await Assert.ThrowsAsync<Skymesh.Mesh.Apps.ServiceRefusedException>(() => chain.Source.Node.OpenAsync(chain.Destination.Node.Address, "192.0.2.1:25", Ct));
        Assert.Equal(Skymesh.Mesh.Apps.ServiceStatus.NotAllowed, refused.Status);
        Assert.Contains("exit policy", refused.Message, StringComparison.Ordinal);

        // A port nobody listens on: the exit says it could not connect.
        using var closed = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        closed.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        var port = ((IPEndPoint)closed.LocalEndPoint!).Port;
        closed.Close();
        var failed = await Assert.ThrowsAsync<Skymesh.Mesh.Apps.ServiceRefusedException>(() => chain.Destination.Node.OpenAsync(chain.Source.Node.Address, $"127.0.0.1:{port}", Ct));
        Assert.Equal(Skymesh.Mesh.Apps.ServiceStatus.ConnectFailed, failed.Status);
    }

    private static double Sample(string metrics, string name)
    {
        foreach (var line in metrics.Split('\n'))
        {
            if (line.StartsWith(name + " ", StringComparison.Ordinal))
                return double.Parse(line[(name.Length + 1)..], CultureInfo.InvariantCulture);
        }
        throw new Xunit.Sdk.XunitException($"{name} is not in the metrics:\n{metrics}");
    }
}
