using System.Buffers.Binary;
using System.Text;
using Skymesh.Identity;

namespace Skymesh.Control.Bus.Nats;

/// <summary>What a signed bus envelope carries (docs/control-plane.md, "The control bus on NATS").</summary>
internal enum EnvelopeKind : byte
{
    Publication = (byte)'P',
    Direct = (byte)'D',
    Request = (byte)'Q',
    Reply = (byte)'R',
    Joined = (byte)'J',
    Left = (byte)'L',
    Heartbeat = (byte)'H',
    Who = (byte)'W',
}

/// <summary>An envelope whose signature, sender and age were checked.</summary>
internal readonly record struct OpenedEnvelope(EnvelopeKind Kind, NodeAddress From, ulong Nonce, ReadOnlyMemory<byte> Payload);

/// <summary>
/// A NATS server proves nothing about who sent a message, so every message of the control bus on NATS carries its
/// sender's signature: <c>version(1) kind(1) from(32) timestamp-ms(8) nonce(8) payload signature(64)</c>, the
/// signature (purpose <c>control-bus</c>) over everything before it followed by the subject it was published on —
/// so it cannot be replayed onto another topic, to another node, or as another kind.
/// </summary>
internal static class BusEnvelope
{
    public const string SignaturePurpose = "control-bus";
    public const byte Version = 1;
    public const int HeaderLength = 1 + 1 + NodeAddress.Length + 8 + 8;
    public const int Overhead = HeaderLength + NodeKey.SignatureLength;

    public static byte[] Seal(NodeKey key, EnvelopeKind kind, string subject, long timestampMs, ulong nonce, ReadOnlySpan<byte> payload)
    {
        var envelope = new byte[Overhead + payload.Length];
        envelope[0] = Version;
        envelope[1] = (byte)kind;
        key.Address.WriteTo(envelope.AsSpan(2, NodeAddress.Length));
        BinaryPrimitives.WriteInt64BigEndian(envelope.AsSpan(2 + NodeAddress.Length), timestampMs);
        BinaryPrimitives.WriteUInt64BigEndian(envelope.AsSpan(10 + NodeAddress.Length), nonce);
        payload.CopyTo(envelope.AsSpan(HeaderLength));
        var signed = HeaderLength + payload.Length;
        key.Sign(SignaturePurpose, SignedMessage(envelope.AsSpan(0, signed), subject), envelope.AsSpan(signed));
        return envelope;
    }

    /// <summary>
    /// Parses and checks an envelope received on <paramref name="subject"/>: the layout, the age against
    /// <paramref name="nowMs"/> within <paramref name="window"/>, then the signature. Returns null and the reason when
    /// any check fails.
    /// </summary>
    public static OpenedEnvelope? Open(ReadOnlyMemory<byte> envelope, string subject, long nowMs, TimeSpan window, Func<NodeAddress, NodeVerifier> verifiers, out string? refusal)
    {
        var span = envelope.Span;
        if (span.Length < Overhead || span[0] != Version || !Enum.IsDefined((EnvelopeKind)span[1]))
        {
            refusal = "not an envelope";
            return null;
        }
        if (!NodeAddress.TryFromBytes(span.Slice(2, NodeAddress.Length), out var from))
        {
            refusal = "sender is not a node address";
            return null;
        }
        var timestamp = BinaryPrimitives.ReadInt64BigEndian(span[(2 + NodeAddress.Length)..]);
        if (Math.Abs(nowMs - timestamp) > (long)window.TotalMilliseconds)
        {
            refusal = "outside the time window";
            return null;
        }
        var signed = span.Length - NodeKey.SignatureLength;
        if (!verifiers(from).Verify(SignaturePurpose, SignedMessage(span[..signed], subject), span[signed..]))
        {
            refusal = "bad signature";
            return null;
        }
        refusal = null;
        return new OpenedEnvelope((EnvelopeKind)span[1], from, BinaryPrimitives.ReadUInt64BigEndian(span[(10 + NodeAddress.Length)..]), envelope[HeaderLength..signed]);
    }

    private static byte[] SignedMessage(ReadOnlySpan<byte> body, string subject)
    {
        var message = new byte[body.Length + Encoding.UTF8.GetByteCount(subject)];
        body.CopyTo(message);
        Encoding.UTF8.GetBytes(subject, message.AsSpan(body.Length));
        return message;
    }
}
