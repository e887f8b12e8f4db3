namespace Skymesh.Node.Tests;

/// <summary>node.json's <c>exchange</c> section: the exchange the node trades on as its own address (docs/dashboard.md, "Exchange").</summary>
public class ExchangeConfigTests
{
    private const string Interfaces = """ "interfaces": [ { "type": "udp", "listen": "0.0.0.0:7400" } ] """;

    private static NodeOptions Parse(string rest) => NodeOptions.Parse($$"""{ {{Interfaces}} {{rest}} }""", "/srv/node");

    private static NodeConfigException Bad(string rest) => Assert.Throws<NodeConfigException>(() => Parse(rest));

    [Fact]
    public void Without_the_section_the_node_trades_on_no_exchange()
    {
        Assert.Null(Parse(", \"broker\": \"127.0.0.1:8787\"").Exchange);
    }

    [Fact]
    public void The_broker_and_its_name_default_to_the_nodes_own_and_the_topic_prefix_to_exchange()
    {
        var exchange = Parse("""
            , "broker": "10.0.0.5:8787", "brokerName": "mesh-broker", "exchange": { "service": "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798" }
            """).Exchange!;
        Assert.Equal("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798", exchange.Service);
        Assert.Equal("10.0.0.5", exchange.Host);
        Assert.Equal(8787, exchange.Port);
        Assert.Equal("10.0.0.5:8787", exchange.Broker);
        Assert.Equal("mesh-broker", exchange.BrokerName);
        Assert.Equal("exchange", exchange.Name);
    }

    [Fact]
    public void Every_setting_of_the_section_is_read()
    {
        var exchange = Parse("""
            , "broker": "nats://127.0.0.1:4222",
              "exchange": { "service": "ex-1", "broker": "exchange.example.org:9000", "brokerName": "ex-broker", "name": "market" }
            """).Exchange!;
        Assert.Equal(new NodeExchangeOptions("ex-1", "exchange.example.org", 9000, "ex-broker", "market"), exchange);
    }

    [Theory]
    [InlineData(""", "broker": "127.0.0.1:8787", "exchange": {} """, "$.exchange.service", "is missing")]
    [InlineData(""", "broker": "127.0.0.1:8787", "exchange": { "service": "has space" } """, "$.exchange.service", "not an SSMP id")]
    [InlineData(""", "exchange": { "service": "ex" } """, "$.exchange.broker", "no broker of its own")]
    [InlineData(""", "broker": "nats://127.0.0.1:4222", "exchange": { "service": "ex" } """, "$.exchange.broker", "is NATS")]
    [InlineData(""", "exchange": { "service": "ex", "broker": "no-port" } """, "$.exchange.broker", "is not host:port")]
    [InlineData(""", "exchange": { "service": "ex", "broker": "127.0.0.1:8787", "brokerName": "" } """, "$.exchange.brokerName", "is not a broker name")]
    [InlineData(""", "exchange": { "service": "ex", "broker": "127.0.0.1:8787", "name": "a-name-that-is-longer-than-forty-characters-long" } """, "$.exchange.name", "longer than 40")]
    [InlineData(""", "exchange": { "service": "ex", "broker": "127.0.0.1:8787", "market": "SKY/BTC" } """, "$.exchange.market", "is not a node setting")]
    [InlineData(""", "settlement": { "service": true } """, "$.settlement.service", "add one")]
    [InlineData(""", "exchange": { "service": "ex", "broker": "127.0.0.1:8787" }, "settlement": { "service": true, "exchange": "dir" } """, "$.settlement.service", "give one of them")]
    [InlineData(""", "exchange": { "service": "ex", "broker": "127.0.0.1:8787" }, "settlement": { "service": true, "asset": "BTC" } """, "$.settlement.asset", "in SKY, not BTC")]
    public void A_bad_section_is_refused_naming_the_field_and_why(string rest, string field, string why)
    {
        var e = Bad(rest);
        Assert.Equal(field, e.Field);
        Assert.Contains(why, e.Message, StringComparison.Ordinal);
    }
}
