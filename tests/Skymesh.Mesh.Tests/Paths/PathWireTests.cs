using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Tests.Paths;

public class PathWireTests
{
    // docs/wire-format.md, "Path messages".
    private static readonly byte[] DataVector = Convert.FromHexString("00000001" + "00" + "0000000000000102" + "6869");

    private static readonly byte[] AckVector = Convert.FromHexString(
        "00000001" + "00" + "00000000000003e8" + "00000000004003e8" + "02" + "000001f4000001f4" + "000007d000000064");

    private static readonly byte[] CloseVector = Convert.FromHexString("00000002" + "00" + "0000" + "03" + "627965");

    private static readonly byte[] KeepaliveVector = Convert.FromHexString("00" + "0000000000000007");

    // The data vector sealed with key 0x00…0x1f as the first message (counter 0), type 17; computed with
    // OpenSSL's ChaCha20-Poly1305 through Python's `cryptography`, not by Skymesh.
    private static readonly byte[] SealedVector = Convert.FromHexString(
        "0000000000000000" + "4440c90994b86084525e3985eb7112" + "c70f4735adc5577dd5ed490a2d166d10");

    [Fact]
    public void A_data_message_is_written_as_documented_and_reads_back()
    {
        var buffer = new byte[64];
        var length = PathWire.WriteData(buffer, 1, fin: false, 0x0102, "hi"u8);
        Assert.Equal(DataVector, buffer[..length]);
        Assert.Equal(PathWireError.None, PathWire.TryReadData(DataVector, out var id, out var fin, out var offset, out var data));
        Assert.Equal((1u, false, 0x0102L), (id, fin, offset));
        Assert.Equal("hi"u8.ToArray(), data.ToArray());
    }

    [Fact]
    public void An_acknowledgement_with_sack_blocks_is_written_as_documented_and_reads_back()
    {
        var buffer = new byte[64];
        SackBlock[] blocks = [new(1500, 2000), new(3000, 3100)];
        var length = PathWire.WriteAck(buffer, 1, finReceived: false, 1000, 1000 + (4 << 20), blocks);
        Assert.Equal(AckVector, buffer[..length]);
        var read = new SackBlock[PathWire.MaxSackBlocks];
        Assert.Equal(PathWireError.None, PathWire.TryReadAck(AckVector, out var id, out var fin, out var cumulative, out var limit, read, out var count));
        Assert.Equal((1u, false, 1000L, 1000L + (4 << 20)), (id, fin, cumulative, limit));
        Assert.Equal(blocks, read[..count]);
    }

    [Fact]
    public void A_close_and_a_keepalive_are_written_as_documented_and_read_back()
    {
        var buffer = new byte[300];
        var length = PathWire.WriteClose(buffer, 2, confirm: false, (ushort)StreamCloseCode.Aborted, "bye");
        Assert.Equal(CloseVector, buffer[..length]);
        Assert.Equal(PathWireError.None, PathWire.TryReadClose(CloseVector, out var id, out var confirm, out var code, out var reason));
        Assert.Equal((2u, false, (ushort)0, "bye"), (id, confirm, code, reason));

        length = PathWire.WriteKeepalive(buffer, reply: false, 7);
        Assert.Equal(KeepaliveVector, buffer[..length]);
        Assert.Equal(PathWireError.None, PathWire.TryReadKeepalive(KeepaliveVector, out var reply, out var token));
        Assert.Equal((false, 7ul), (reply, token));
    }

    [Fact]
    public void The_cipher_seals_the_documented_vector_and_opens_it()
    {
        using var cipher = new PathCipher(PathHarness.KeyAtoB, PathHarness.KeyAtoB);
        var buffer = new byte[DataVector.Length + PathCipher.Overhead];
        Assert.Equal(SealedVector.Length, cipher.Seal((byte)PathMessageType.StreamData, DataVector, buffer));
        Assert.Equal(SealedVector, buffer);
        var plain = new byte[SealedVector.Length];
        Assert.True(cipher.TryOpen((byte)PathMessageType.StreamData, SealedVector, plain, out var written));
        Assert.Equal(DataVector, plain[..written]);
    }

    public static TheoryData<string, byte[]> Vectors => new()
    {
        { "data", DataVector },
        { "ack", AckVector },
        { "close", CloseVector },
        { "keepalive", KeepaliveVector },
    };

    [Theory]
    [MemberData(nameof(Vectors))]
    public void Every_truncation_of_a_message_is_refused_or_reads_as_a_shorter_valid_message(string kind, byte[] vector)
    {
        var blocks = new SackBlock[PathWire.MaxSackBlocks];
        for (var length = 0; length < vector.Length; length++)
        {
            var cut = vector.AsSpan(0, length);
            var error = kind switch
            {
                "data" => PathWire.TryReadData(cut, out _, out _, out _, out _),
                "ack" => PathWire.TryReadAck(cut, out _, out _, out _, out _, blocks, out _),
                "close" => PathWire.TryReadClose(cut, out _, out _, out _, out _),
                _ => PathWire.TryReadKeepalive(cut, out _, out _),
            };
            // Only data carries a payload of free length: a cut inside it is just less data.
            if (kind == "data" && length >= PathWire.DataHeaderLength)
                Assert.Equal(PathWireError.None, error);
            else
                Assert.NotEqual(PathWireError.None, error);
        }
    }

    [Fact]
    public void Hostile_fields_are_refused_with_a_reason()
    {
        var blocks = new SackBlock[PathWire.MaxSackBlocks];
        var data = DataVector.ToArray();
        data[4] = 0x02;
        Assert.Equal(PathWireError.ReservedBitsSet, PathWire.TryReadData(data, out _, out _, out _, out _));
        data = DataVector.ToArray();
        data[5] = 0x40; // offset 2^62
        Assert.Equal(PathWireError.OffsetTooLarge, PathWire.TryReadData(data, out _, out _, out _, out _));

        var ack = AckVector.ToArray();
        ack[21] = 17;
        Assert.Equal(PathWireError.TooManyBlocks, PathWire.TryReadAck(ack, out _, out _, out _, out _, blocks, out _));
        ack = AckVector.ToArray();
        ack[21] = 1;
        Assert.Equal(PathWireError.BadLength, PathWire.TryReadAck(ack, out _, out _, out _, out _, blocks, out _));
        ack = AckVector.ToArray();
        ack.AsSpan(22, 4).Clear(); // a block starting at the cumulative point, which is missing by definition
        Assert.Equal(PathWireError.BadBlock, PathWire.TryReadAck(ack, out _, out _, out _, out _, blocks, out _));

        var close = CloseVector.ToArray();
        close[^1] = 0xFF;
        Assert.Equal(PathWireError.BadText, PathWire.TryReadClose(close, out _, out _, out _, out _));
        Assert.Equal(PathWireError.BadLength, PathWire.TryReadKeepalive([.. KeepaliveVector, 0], out _, out _));
    }

    [Fact]
    public void A_long_reason_is_cut_to_255_bytes_without_splitting_a_character()
    {
        var buffer = new byte[300];
        var length = PathWire.WriteClose(buffer, 2, confirm: false, 0, new string('é', 200));
        Assert.Equal(PathWire.CloseFixedLength + 254, length);
        Assert.Equal(PathWireError.None, PathWire.TryReadClose(buffer.AsSpan(0, length), out _, out _, out _, out var reason));
        Assert.Equal(new string('é', 127), reason);
    }
}
