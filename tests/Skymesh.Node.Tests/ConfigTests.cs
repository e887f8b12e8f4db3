using System.Net;

namespace Skymesh.Node.Tests;

public class ConfigTests
{
    private const string Peer = "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9";

    private static NodeConfigException Bad(string json) =>
        Assert.Throws<NodeConfigException>(() => NodeOptions.Parse(json, "/srv/node"));

    [Fact]
    public void A_full_config_is_read_with_every_setting()
    {
        var options = NodeOptions.Parse($$"""
            {
              // comments are allowed
              "dataDir": "state",
              "api": "127.0.0.1:7311",
              "broker": "127.0.0.1:8787",
              "encrypt": false,
              "interfaces": [
                { "name": "lan", "type": "udp", "listen": "0.0.0.0:7400", "mtu": 1400 },
                { "type": "tcp", "listen": "127.0.0.1:7401" }
              ],
              "peers": [ { "address": "{{Peer}}", "endpoint": "10.0.0.2:7400", "interface": "lan" } ],
              "exits": [ "127.0.0.1:*", "10.0.0.0/8:80-90", "example.org:443" ],
              "keepaliveSeconds": 2,
              "deadAfterSeconds": 10,
              "labelLifetimeSeconds": 30,
              "pathTimeoutSeconds": 20,
            }
            """, "/srv/node");
        Assert.Equal("/srv/node/state", options.DataDir);
        Assert.Equal("/srv/node/state/node.key", options.KeyFile);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 7311), options.Api);
        Assert.Equal("127.0.0.1:8787", options.Broker);
        Assert.False(options.Encrypt);
        Assert.Equal(2, options.Interfaces.Count);
        Assert.Equal(new InterfaceOptions("lan", InterfaceKind.Udp, new IPEndPoint(IPAddress.Any, 7400), 1400), options.Interfaces[0]);
        Assert.Equal("tcp0", options.Interfaces[1].Name);
        var peer = Assert.Single(options.Peers);
        Assert.Equal(Peer, peer.Address.ToString());
        Assert.Equal(new IPEndPoint(IPAddress.Parse("10.0.0.2"), 7400), peer.Endpoint);
        Assert.True(options.Exits.Allows("10.1.2.3", IPAddress.Parse("10.1.2.3"), 85));
        Assert.False(options.Exits.Allows("10.1.2.3", IPAddress.Parse("10.1.2.3"), 91));
        Assert.True(options.Exits.Allows("EXAMPLE.org", IPAddress.Parse("93.184.216.34"), 443));
        Assert.False(options.Exits.Allows("example.com", IPAddress.Parse("93.184.216.34"), 443));
        Assert.Equal(TimeSpan.FromSeconds(2), options.Keepalive);
        Assert.Equal(TimeSpan.FromSeconds(10), options.DeadAfter);
        Assert.Equal(TimeSpan.FromSeconds(30), options.LabelLifetime);
        Assert.Equal(TimeSpan.FromSeconds(20), options.PathTimeout);
    }

    [Fact]
    public void Defaults_are_safe_a_loopback_api_link_encryption_and_no_exits()
    {
        var options = NodeOptions.Parse("""{ "interfaces": [ { "type": "udp", "listen": "0.0.0.0:7400" } ] }""", "/srv/node");
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, NodeOptions.DefaultApiPort), options.Api);
        Assert.True(options.Encrypt);
        Assert.Equal("/srv/node", options.DataDir);
        Assert.False(options.Exits.Allows("127.0.0.1", IPAddress.Loopback, 80));
    }

    [Fact]
    public void Services_are_read_with_their_prices_limits_and_regions()
    {
        var options = NodeOptions.Parse("""
            {
              "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ],
              "exits": [ "*:443" ],
              "vpn": { "serve": false },
              "services": [
                { "kind": "vpn", "price": 200, "region": "eu-west", "maxMbps": 50, "maxSessions": 10 },
                { "kind": "app", "name": "web", "port": 8080 },
                { "kind": "EXIT", "price": 3 }
              ]
            }
            """, "/srv/node");
        Assert.Equal(
            [
                new Skymesh.Control.Discovery.ServiceEntry(Skymesh.Control.Discovery.ServiceKind.Vpn, "", 0, 200, 50, 10, "eu-west"),
                new Skymesh.Control.Discovery.ServiceEntry(Skymesh.Control.Discovery.ServiceKind.App, "web", 8080),
                new Skymesh.Control.Discovery.ServiceEntry(Skymesh.Control.Discovery.ServiceKind.Exit, PricePerMiB: 3),
            ], options.Services);
        Assert.Empty(NodeOptions.Parse("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ] }""", "/srv/node").Services);
        // A VPN is offered only by a node that can serve one.
        var noVpn = Assert.Throws<NodeConfigException>(() => NodeOptions.Parse("""
            { "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "vpn", "price": 200 } ] }
            """, "/srv/node"));
        Assert.Equal("$.services", noVpn.Field);
        Assert.Contains("\"vpn\" section", noVpn.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "peer": [] }""", "$.peer", "not a node setting")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "broker": "via-neighbours", "brokerPin": "abc" }""", "$.brokerPin", "not a key fingerprint")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "broker": "127.0.0.1:8787", "brokerPin": "sha256:0000000000000000000000000000000000000000000000000000000000000000" }""", "$.brokerPin", "through its neighbours")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "broker": "via-neighbour" }""", "$.broker", "via-neighbours")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "busRelay": { "maxTunnelsPerNeighbour": 0 } }""", "$.busRelay.maxTunnelsPerNeighbour", "from 1 to 100000")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "busRelay": { "bytesPerSecondPerNeighbour": 10 } }""", "$.busRelay.bytesPerSecondPerNeighbour", "below 1024")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "linkRelay": { "maxPerNeighbour": 0 } }""", "$.linkRelay.maxPerNeighbour", "from 1 to 10000")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "broker": "127.0.0.1:8787", "leafnodeListen": "127.0.0.1:7422" }""", "$.leafnodeListen", "via-neighbours")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "broker": "127.0.0.1:8787", "busRelay": { "leafnodes": "127.0.0.1:7422" } }""", "$.busRelay.leafnodes", "NATS cluster directly")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "broker": "nats://127.0.0.1:4222", "busRelay": { "leafnodes": "nowhere" } }""", "$.busRelay.leafnodes", "not host:port")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "linkRelay": { "bytesPerSecond": 1000 } }""", "$.linkRelay.bytesPerSecond", "below 16384")]
    [InlineData("""{ "interfaces": [] }""", "$.interfaces", "at least one interface")]
    [InlineData("""{ }""", "$.interfaces", "at least one interface")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "localhost" } ] }""", "$.interfaces[0].listen", "not an address:port")]
    [InlineData("""{ "interfaces": [ { "type": "sctp", "listen": "127.0.0.1:1" } ] }""", "$.interfaces[0].type", "not an interface type")]
    [InlineData("""{ "interfaces": [ { "listen": "127.0.0.1:1" } ] }""", "$.interfaces[0].type", "missing")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1", "mtu": "big" } ] }""", "$.interfaces[0].mtu", "must be a whole number")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1", "mtu": 10 } ] }""", "$.interfaces[0].mtu", "outside")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "peers": [ { "address": "abc", "endpoint": "1.2.3.4:5" } ] }""", "$.peers[0].address", "not a node address")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "peers": [ { "address": "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9" } ] }""", "$.peers[0].endpoint", "missing")]
    [InlineData("""{ "interfaces": [ { "type": "tcp", "listen": "127.0.0.1:1" } ], "broker": "127.0.0.1:8787", "peers": [ { "address": "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9" } ] }""", "$.peers[0].endpoint", "needs a UDP interface")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "peers": [ { "address": "f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9", "endpoint": "1.2.3.4:5", "interface": "wan" } ] }""", "$.peers[0].interface", "no interface is named \"wan\"")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "exits": [ "127.0.0.1:*", "*:0" ] }""", "$.exits[1]", "port")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "keepaliveSeconds": 5, "deadAfterSeconds": 2 }""", "$.deadAfterSeconds", "longer than keepaliveSeconds")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "api": "nowhere" }""", "$.api", "not an address:port")]
    [InlineData("""{ "interfaces": [ { "type": "udp" """, "$.interfaces[0]", "(line 1, byte ")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "price": 1 } ] }""", "$.services[0].kind", "missing")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "ftp" } ] }""", "$.services[0].kind", "not a service kind")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ null ] }""", "$.services[0]", "is null")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "app", "port": 80 } ] }""", "$.services[0].name", "an app is offered under a name")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "app", "name": "web" } ] }""", "$.services[0].port", "missing")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "app", "name": "web", "port": 70000 } ] }""", "$.services[0].port", "not a port")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "app", "name": "a-name-that-is-longer-than-32-bytes", "port": 80 } ] }""", "$.services[0].name", "longer than 32 bytes")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "vpn", "name": "x" } ] }""", "$.services[0].name", "for apps only")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "vpn", "port": 1 } ] }""", "$.services[0].port", "for apps only")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "vpn", "region": "a-region-that-is-longer-than-32-bytes" } ] }""", "$.services[0].region", "longer than 32 bytes")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "vpn", "region": "eu\u0007" } ] }""", "$.services[0].region", "control character")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "vpn", "maxSessions": 70000 } ] }""", "$.services[0].maxSessions", "number of sessions")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "vpn", "price": -1 } ] }""", "$.services[0].price", "must be a whole number from 0")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "vpn" }, { "kind": "vpn", "price": 5 } ] }""", "$.services[1]", "a second time")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "exit" } ] }""", "$.services[0].kind", "exit rules let nobody out")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "socks" } ] }""", "$.services[0].kind", "exit rules let nobody out")]
    [InlineData("""{ "interfaces": [ { "type": "udp", "listen": "127.0.0.1:1" } ], "services": [ { "kind": "app", "name": "a0", "port": 80 }, { "kind": "app", "name": "a1", "port": 80 }, { "kind": "app", "name": "a2", "port": 80 }, { "kind": "app", "name": "a3", "port": 80 }, { "kind": "app", "name": "a4", "port": 80 }, { "kind": "app", "name": "a5", "port": 80 }, { "kind": "app", "name": "a6", "port": 80 }, { "kind": "app", "name": "a7", "port": 80 }, { "kind": "app", "name": "a8", "port": 80 }, { "kind": "app", "name": "a9", "port": 80 }, { "kind": "app", "name": "a10", "port": 80 }, { "kind": "app", "name": "a11", "port": 80 }, { "kind": "app", "name": "a12", "port": 80 }, { "kind": "app", "name": "a13", "port": 80 }, { "kind": "app", "name": "a14", "port": 80 }, { "kind": "app", "name": "a15", "port": 80 }, { "kind": "app", "name": "a16", "port": 80 }, { "kind": "app", "name": "a17", "port": 80 }, { "kind": "app", "name": "a18", "port": 80 }, { "kind": "app", "name": "a19", "port": 80 }, { "kind": "app", "name": "a20", "port": 80 }, { "kind": "app", "name": "a21", "port": 80 }, { "kind": "app", "name": "a22", "port": 80 }, { "kind": "app", "name": "a23", "port": 80 }, { "kind": "app", "name": "a24", "port": 80 }, { "kind": "app", "name": "a25", "port": 80 }, { "kind": "app", "name": "a26", "port": 80 }, { "kind": "app", "name": "a27", "port": 80 }, { "kind": "app", "name": "a28", "port": 80 }, { "kind": "app", "name": "a29", "port": 80 }, { "kind": "app", "name": "a30", "port": 80 }, { "kind": "app", "name": "a31", "port": 80 }, { "kind": "app", "name": "a32", "port": 80 } ] }""", "$.services", "at most 32 services")]
    [InlineData("""null""", "$", "empty")]
    public void A_bad_config_names_the_field_and_the_problem(string json, string field, string problem)
    {
        var error = Bad(json);
        Assert.Equal(field, error.Field);
        Assert.StartsWith(field, error.Message, StringComparison.Ordinal);
        Assert.Contains(problem, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void A_missing_config_file_is_a_clear_error()
    {
        var error = Assert.Throws<NodeConfigException>(() => NodeOptions.Load("/nonexistent/skymesh/node.json"));
        Assert.Contains("/nonexistent/skymesh/node.json", error.Message, StringComparison.Ordinal);
    }
}
