using System.Text;

namespace Skymesh.Identity.Tests;

public class NodeVerifierTests
{
    private static readonly byte[] Message = Encoding.UTF8.GetBytes("a cumulative receipt: 1,048,576 bytes, 10 micro-units");

    [Fact]
    public void It_answers_as_the_address_does()
    {
        using var key = NodeKey.Generate();
        using var other = NodeKey.Generate();
        var verifier = new NodeVerifier(key.Address);
        var signature = key.Sign("settlement-receipt", Message);
        Assert.Equal(key.Address, verifier.Address);
        Assert.True(verifier.Verify("settlement-receipt", Message, signature));
        Assert.False(verifier.Verify("path-setup", Message, signature));
        Assert.False(verifier.Verify("settlement-receipt", Message, other.Sign("settlement-receipt", Message)));
        Assert.False(verifier.Verify("settlement-receipt", Message, signature.AsSpan(0, 63)));
        Assert.False(verifier.Verify("settlement-receipt", Message, Enumerable.Repeat((byte)0xFF, 64).ToArray()));
        for (var i = 0; i < signature.Length; i += 7)
        {
            var tampered = (byte[])signature.Clone();
            tampered[i] ^= 0x01;
            Assert.Equal(key.Address.Verify("settlement-receipt", Message, tampered), verifier.Verify("settlement-receipt", Message, tampered));
        }
    }

    [Fact]
    public void The_empty_address_has_no_verifier()
    {
        Assert.Throws<ArgumentException>(() => new NodeVerifier(default));
    }
}
