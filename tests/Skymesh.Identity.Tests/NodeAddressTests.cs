namespace Skymesh.Identity.Tests;

public class NodeAddressTests
{
    // bip-0340 test vector 1's public key: a known point.
    private const string Known = "dff1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba659";

    [Fact]
    public void An_address_prints_as_64_lowercase_hex_digits_and_parses_back()
    {
        using var key = NodeKey.Generate();
        var text = key.Address.ToString();
        Assert.Matches("^[0-9a-f]{64}$", text);
        Assert.Equal(key.Address, NodeAddress.Parse(text));
        Assert.Equal(text, $"{key.Address}");
    }

    [Fact]
    public void Upper_case_hex_parses_to_the_same_address_and_prints_lower_case()
    {
        var upper = NodeAddress.Parse(Known.ToUpperInvariant());
        Assert.Equal(NodeAddress.Parse(Known), upper);
        Assert.Equal(Known, upper.ToString());
        Assert.True(NodeAddress.TryParse(Known.ToUpperInvariant().AsSpan(), out var fromSpan));
        Assert.Equal(upper, fromSpan);
    }

    [Fact]
    public void Equal_addresses_are_equal_and_hash_alike_and_different_ones_are_not()
    {
        var a = NodeAddress.Parse(Known);
        var b = NodeAddress.Parse(Known);
        using var other = NodeKey.Generate();
        Assert.True(a == b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.True(a != other.Address);
        Assert.False(a.Equals((object)other.Address));
        var set = new HashSet<NodeAddress> { a, b, other.Address };
        Assert.Equal(2, set.Count);
    }

    [Fact]
    public void Bytes_round_trip_through_WriteTo_and_FromBytes()
    {
        var address = NodeAddress.Parse(Known);
        Span<byte> bytes = stackalloc byte[NodeAddress.Length];
        address.WriteTo(bytes);
        Assert.Equal(Convert.FromHexString(Known), bytes.ToArray());
        Assert.Equal(address, NodeAddress.FromBytes(bytes));
        Assert.Equal(address, NodeAddress.FromBytes(address.ToBytes()));
        Assert.True(NodeAddress.TryFromBytes(bytes, out var parsed));
        Assert.Equal(address, parsed);
    }

    [Fact]
    public void Writing_into_a_short_destination_is_refused()
    {
        var address = NodeAddress.Parse(Known);
        var e = Assert.Throws<ArgumentException>(() => address.WriteTo(new byte[31]));
        Assert.Contains("32 bytes", e.Message, StringComparison.Ordinal);
        Assert.False(address.TryFormat(new char[63], out var written));
        Assert.Equal(0, written);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(31)]
    [InlineData(33)]
    public void Bytes_of_the_wrong_length_are_not_an_address(int length)
    {
        var e = Assert.Throws<ArgumentException>(() => NodeAddress.FromBytes(new byte[length]));
        Assert.Contains($"32 bytes; got {length}", e.Message, StringComparison.Ordinal);
        Assert.False(NodeAddress.TryFromBytes(new byte[length], out _));
    }

    [Fact]
    public void Bytes_that_are_no_curve_point_are_not_an_address()
    {
        var e = Assert.Throws<ArgumentException>(() => NodeAddress.FromBytes(new byte[32]));
        Assert.Contains("not the x coordinate of a point on secp256k1", e.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("", "64 hex digits; got 0 characters")]
    [InlineData("dff1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba65", "64 hex digits; got 63 characters")]
    [InlineData("dff1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba6590", "64 hex digits; got 65 characters")]
    [InlineData("0xf1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba659", "position 1 ('x') is not a hex digit")]
    [InlineData("dff1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba65g", "position 63 ('g') is not a hex digit")]
    [InlineData(" ff1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba659", "position 0 (' ') is not a hex digit")]
    [InlineData("dff1d77f2a671c5f36183726db2341be58feae1da2deced843240f7b502ba65\n", "position 63 ('\\u000a') is not a hex digit")]
    [InlineData("eefdea4cdb677750a420fee807eacf21eb9898ae79b9768766e4faa04a2d4a34", "not the x coordinate of a point on secp256k1")]
    [InlineData("fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc30", "not the x coordinate of a point on secp256k1")]
    [InlineData("0000000000000000000000000000000000000000000000000000000000000000", "not the x coordinate of a point on secp256k1")]
    public void Text_that_is_not_an_address_is_refused_with_the_reason(string text, string reason)
    {
        var e = Assert.Throws<FormatException>(() => NodeAddress.Parse(text));
        Assert.Contains(reason, e.Message, StringComparison.Ordinal);
        Assert.False(NodeAddress.TryParse(text, out var address));
        Assert.True(address.IsEmpty);
    }

    [Fact]
    public void A_null_string_is_not_an_address()
    {
        Assert.False(NodeAddress.TryParse((string?)null, out _));
        Assert.Throws<ArgumentNullException>(() => NodeAddress.Parse((string)null!));
    }

    [Fact]
    public void The_default_address_is_empty_and_unequal_to_any_key()
    {
        using var key = NodeKey.Generate();
        Assert.True(default(NodeAddress).IsEmpty);
        Assert.NotEqual(default, key.Address);
        Assert.Equal(new string('0', 64), default(NodeAddress).ToString());
    }
}
