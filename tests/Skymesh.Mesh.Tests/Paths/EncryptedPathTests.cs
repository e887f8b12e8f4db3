using System.Buffers.Binary;
using System.Text;
using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Tests.Paths;

public class EncryptedPathTests
{
    private static readonly byte[] Secret = Encoding.ASCII.GetBytes("SKYMESH-SECRET-PAYLOAD:");

    /// <summary>Sends 1 MB made of the secret marker over a lossy path; returns every payload the channels carried.</summary>
    private static async Task<List<byte[]>> SendSecrets(bool encrypted)
    {
        var conditions = new Conditions { Latency = TimeSpan.FromMilliseconds(10), Loss = 0.05, Reordering = 0.05, Duplication = 0.05 };
        await using var path = PathHarness.Create(conditions, encrypted: encrypted);
        var seen = new List<byte[]>();
        path.AtoB.Tap = (_, payload) => seen.Add(payload);
        path.BtoA.Tap = (_, payload) => seen.Add(payload);
        var (atA, atB) = path.OpenStream();
        using var transfer = new Transfer(atA, atB, 1 << 20, fill: static (span, offset) =>
        {
            for (var i = 0; i < span.Length; i++)
                span[i] = Secret[(int)((offset + i) % Secret.Length)];
        });
        Assert.True(path.RunUntil(transfer.Pump, TimeSpan.FromSeconds(120)));
        Assert.Equal(transfer.SentHash, transfer.ReceivedHash);
        return seen;
    }

    [Fact]
    public async Task Without_a_cipher_the_secret_is_visible_on_the_path_which_shows_the_check_can_see_it()
    {
        var seen = await SendSecrets(encrypted: false);
        Assert.Contains(seen, payload => payload.AsSpan().IndexOf(Secret) >= 0);
    }

    [Fact]
    public async Task With_a_cipher_no_plaintext_appears_on_the_path_and_no_nonce_repeats_even_across_retransmissions()
    {
        var seen = await SendSecrets(encrypted: true);
        Assert.DoesNotContain(seen, payload => payload.AsSpan().IndexOf(Secret.AsSpan(0, 8)) >= 0);
        Assert.All(seen, payload => Assert.True(payload.Length >= PathCipher.Overhead));
        // Counters are per direction; within each they never repeat (the taps saw both directions, so
        // compare per direction by counting: every counter appears at most twice, once per direction).
        var counters = seen.GroupBy(payload => BinaryPrimitives.ReadUInt64BigEndian(payload));
        Assert.All(counters, group => Assert.InRange(group.Count(), 1, 2));
    }

    [Fact]
    public async Task A_flipped_bit_in_a_sealed_message_is_dropped_and_counted_and_the_stream_recovers()
    {
        var conditions = new Conditions { Latency = TimeSpan.FromMilliseconds(10), Corruption = 0.03 };
        await using var path = PathHarness.Create(conditions, encrypted: true);
        var (atA, atB) = path.OpenStream();
        using var transfer = new Transfer(atA, atB, 3_000_000);
        Assert.True(path.RunUntil(transfer.Pump, TimeSpan.FromSeconds(120)));

        Assert.Equal(transfer.SentHash, transfer.ReceivedHash);
        Assert.True(path.B.Counters.DecryptionFailures > 0);
        Assert.True(path.A.Counters.DecryptionFailures > 0);
        Assert.True(path.B.Counters.MessagesDropped >= path.B.Counters.DecryptionFailures);
        Assert.Equal(0, atB.Counters.MessagesDropped); // nothing altered got as far as the stream
    }

    [Fact]
    public async Task A_sealed_message_altered_on_the_way_never_reaches_the_stream()
    {
        await using var path = PathHarness.Create(encrypted: true);
        byte[]? captured = null;
        path.AtoB.Tap = (type, payload) => captured ??= type == (byte)PathMessageType.StreamData ? payload.ToArray() : null;
        var (atA, atB) = path.OpenStream();
        Assert.NotNull(captured);
        captured[^20] ^= 0x04;
        var before = path.B.Counters;

        path.B.OnMessage((byte)PathMessageType.StreamData, captured);

        Assert.Equal(before.DecryptionFailures + 1, path.B.Counters.DecryptionFailures);
        Assert.Equal(before.MessagesDropped + 1, path.B.Counters.MessagesDropped);
        Assert.Equal(1, atB.Counters.SegmentsReceived);
        Assert.Null(atA.Failure);
    }

    [Fact]
    public async Task Datagrams_are_sealed_too()
    {
        await using var path = PathHarness.Create(encrypted: true);
        byte[]? onTheWire = null;
        path.AtoB.Tap = (_, payload) => onTheWire = payload;
        Assert.True(path.A.Datagrams.TrySend("a datagram"u8));
        path.Run(TimeSpan.FromMilliseconds(20));

        Assert.True(path.B.Datagrams.TryReceive(out var datagram));
        Assert.Equal("a datagram"u8.ToArray(), datagram);
        Assert.NotNull(onTheWire);
        Assert.Equal("a datagram".Length + PathCipher.Overhead, onTheWire.Length);
        Assert.True(onTheWire.AsSpan().IndexOf("datagram"u8) < 0);
        Assert.Equal(PathHarness.UdpPayload - PathCipher.Overhead, path.A.Datagrams.MaxDatagramSize);
    }
}
