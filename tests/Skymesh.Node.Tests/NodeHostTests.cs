using System.Net;
using Skymesh.Control.Bus;
using Skymesh.Control.Bus.Ssmp;
using Skymesh.Control.Topology;
using Skymesh.Identity;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Node.Hosting;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Node.Tests;

/// <summary>
/// Nodes put together by the node host from injected parts — keys in memory, interfaces on an in-process network,
/// a ledger in memory — with the same control-plane scenario run on each control bus.
/// </summary>
public sealed class NodeHostTests : IAsyncDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);
    private readonly List<NodeHost> _hosts = [];
    private readonly Skymesh.Tests.CapturingLoggerFactory _logs = new();
    private readonly MemoryNetworks _networks = new(seed: 9);
    private SsmpBroker? _broker;

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private IControlBusConnector Bus(string kind, MemoryBusNetwork memory)
    {
        if (kind == "memory")
            return new MemoryBusConnector(memory);
        if (_broker is null)
        {
            var options = new SsmpBrokerOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0) };
            options.Authenticators.Add(new KeyAuthenticator());
            _broker = new SsmpBroker(options);
            _broker.Start();
        }
        return new SsmpBusConnector("127.0.0.1", _broker.LocalEndPoint.Port);
    }

    private async Task<NodeHost> StartAsync(IControlBusConnector? bus, string extraJson = "", string listen = "")
    {
        var options = NodeOptions.Parse($$"""
            {
              "interfaces": [ { "name": "m0", "type": "memory", "network": "lab"{{listen}} } ],
              "keepaliveSeconds": 0.2,
              "deadAfterSeconds": 1.5,
              "announceSeconds": 30
              {{extraJson}}
            }
            """, Path.Combine(Path.GetTempPath(), "skymesh-never-written"));
        var host = await new NodeHostBuilder(options)
            .UseKeyStore(new MemoryKeyStore(NodeKey.Generate()))
            .UseLogging(_logs)
            .UseInterfaces(new InterfaceFactory(_networks))
            .UseControlBus(bus)
            .UseMemoryLedger()
            .WithoutApi()
            .StartAsync(Ct);
        _hosts.Add(host);
        return host;
    }

    private static MemoryEndPoint At(NodeHost host) => (MemoryEndPoint)host.Node.Interfaces["m0"].LocalEndPoint;

    private static Task<Link> LinkAsync(NodeHost a, NodeHost b) =>
        a.Node.ConnectAsync("m0", At(b), b.Node.Address, Ct).WaitAsync(Bound, Ct);

    [Theory]
    [InlineData("ssmp")]
    [InlineData("memory")]
    public async Task On_either_bus_composed_nodes_announce_open_a_path_and_repair_it_around_a_cut_link(string kind)
    {
        var memory = new MemoryBusNetwork();
        var bus = Bus(kind, memory);
        // A - B - C, and A - D - C: the second route is what the repair takes.
        var a = await StartAsync(bus);
        var b = await StartAsync(bus);
        var c = await StartAsync(bus);
        var d = await StartAsync(bus);
        foreach (var (x, y) in new[] { (a, b), (b, c), (a, d), (d, c) })
            await LinkAsync(x, y);
        var agent = await a.WaitForControlAsync(Ct).WaitAsync(Bound, Ct);
        foreach (var host in new[] { b, c, d })
            await host.WaitForControlAsync(Ct).WaitAsync(Bound, Ct);
        await UntilAsync(() => new[] { a, b, c, d }.Sum(h => agent.Graph.Neighbours(h.Node.Address).Count) == 8, "A learning all four links");

        var path = await agent.OpenPathAsync(c.Node.Address, new PathQuery { Via = [b.Node.Address] }, Ct);
        Assert.Equal(b.Node.Address.ToString(), path.Via);
        Assert.True(await a.Node.PingAsync(c.Node.Address, 64, TimeSpan.FromSeconds(5), Ct) > TimeSpan.Zero);

        // The source's read model shows every hop with its labels, and they are the ones in the relay's table.
        var hops = Assert.Single(a.Read.Paths()).Hops!;
        Assert.Equal([a.Node.Address.ToString(), b.Node.Address.ToString(), c.Node.Address.ToString()], hops.Select(h => h.Node));
        var relay = b.Read.Labels();
        Assert.Contains(relay, e => e.InLabel == hops[1].ForwardIn && e.Action == "forward" && e.OutLabel == hops[2].ForwardIn && e.OutPeer == c.Node.Address.ToString());
        Assert.Contains(relay, e => e.InLabel == hops[1].BackIn && e.Action == "forward" && e.OutLabel == hops[0].BackIn && e.OutPeer == a.Node.Address.ToString());

        // Cut B - C for good: B reports the break over the bus, A repairs through D.
        _networks["lab"].SetCut(At(b), At(c), cut: true);
        b.Node.Switch.Disconnect(b.Node.FindLink(c.Node.Address)!, "cut by the test");
        await UntilAsync(() => a.Node.Paths.SingleOrDefault()?.Via == d.Node.Address.ToString() && a.Node.Paths.Single().State == "up", "the path moving onto A - D - C");
        Assert.True(await a.Node.PingAsync(c.Node.Address, 64, TimeSpan.FromSeconds(5), Ct) > TimeSpan.Zero);
    }

    [Fact]
    public async Task Memory_interfaces_and_peers_come_from_node_json_and_a_taken_address_is_refused()
    {
        var first = await StartAsync(null, listen: """, "listen": "mem:700" """);
        Assert.Equal(700, At(first).Port);
        // The second names the first as its peer, by memory address: it links by itself.
        var second = await StartAsync(null, $$""", "peers": [ { "address": "{{first.Node.Address}}", "endpoint": "mem:700" } ]""");
        await UntilAsync(() => second.Node.FindLink(first.Node.Address) is not null && first.Node.FindLink(second.Node.Address) is not null, "the configured link coming up");

        // As a socket's port in use: a second interface on mem:700 of the same network is refused.
        var taken = NodeOptions.Parse("""{ "interfaces": [ { "type": "memory", "network": "lab", "listen": "mem:700" } ] }""", Path.GetTempPath());
        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => new NodeHostBuilder(taken)
            .UseKeyStore(new MemoryKeyStore(NodeKey.Generate())).UseInterfaces(new InterfaceFactory(_networks)).UseMemoryLedger().WithoutApi().StartAsync(Ct));
        Assert.Contains("mem:700 is in use", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_leafnode_port_already_in_use_stops_the_node_with_the_field_and_the_reason()
    {
        using var holder = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        holder.Start();
        var port = ((System.Net.IPEndPoint)holder.LocalEndpoint).Port;
        var options = NodeOptions.Parse($$"""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:0" } ], "broker": "via-neighbours", "leafnodeListen": "127.0.0.1:{{port}}" }""", Path.GetTempPath());
        var error = await Assert.ThrowsAsync<NodeConfigException>(() => new NodeHostBuilder(options)
            .UseKeyStore(new MemoryKeyStore(NodeKey.Generate())).UseMemoryLedger().WithoutApi().StartAsync(Ct));
        Assert.Equal("$.leafnodeListen", error.Field);
        Assert.Contains("already in use", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("""{ "interfaces": [ { "type": "memory", "listen": "127.0.0.1:7" } ] }""", "$.interfaces[0].listen")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:0", "network": "lab" } ] }""", "$.interfaces[0].network")]
    [InlineData("""{ "interfaces": [ { "type": "memory", "impairment": { "loss": 1.5 } } ] }""", "$.interfaces[0].impairment.loss")]
    [InlineData("""{ "interfaces": [ { "type": "memory", "network": "no spaces" } ] }""", "$.interfaces[0].network")]
    public void Bad_memory_interface_settings_are_refused_naming_the_field(string json, string field)
    {
        var error = Assert.Throws<NodeConfigException>(() => NodeOptions.Parse(json, Path.GetTempPath()));
        Assert.StartsWith(field, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Keys_drawn_from_the_same_seed_are_the_same_keys()
    {
        var one = Enumerable.Range(0, 3).Select(i => MemoryKeyStore.From(new Random(5)).LoadOrCreate(out _).Address).ToList();
        var first = new Random(11);
        var second = new Random(11);
        var a = Enumerable.Range(0, 5).Select(i => MemoryKeyStore.From(first).LoadOrCreate(out _).Address).ToList();
        var b = Enumerable.Range(0, 5).Select(i => MemoryKeyStore.From(second).LoadOrCreate(out _).Address).ToList();
        Assert.Equal(a, b);
        Assert.Equal(5, a.Distinct().Count());
        Assert.Single(one.Distinct());
    }

    private static async Task UntilAsync(Func<bool> condition, string what)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        bounded.CancelAfter(Bound);
        while (!condition())
        {
            try
            {
                await timer.WaitForNextTickAsync(bounded.Token);
            }
            catch (OperationCanceledException) when (!Ct.IsCancellationRequested)
            {
                throw new Xunit.Sdk.XunitException($"{what} did not happen within {Bound.TotalSeconds} s");
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var host in _hosts)
            await host.DisposeAsync();
        if (_broker is not null)
            await _broker.DisposeAsync();
        Assert.True(_logs.Errors.IsEmpty, "the nodes logged errors:\n" + string.Join("\n", _logs.Errors));
    }
}
