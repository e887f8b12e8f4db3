using System.Buffers;
using System.Text;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Bench;

/// <summary>What a line the target sends is, judged from its first bytes only.</summary>
internal enum LineKind : byte
{
    /// <summary>A delivered message: an SSMP event from a peer, a NATS <c>MSG</c>.</summary>
    Delivery,

    /// <summary>A successful response (SSMP 2xx, NATS <c>+OK</c>).</summary>
    Ok,

    /// <summary>An error response (SSMP 4xx/5xx, NATS <c>-ERR</c>).</summary>
    Error,

    /// <summary>The server asks whether we are alive and must be answered.</summary>
    Ping,

    /// <summary>The answer to our own PING (NATS uses it to confirm that everything before it was processed).</summary>
    Pong,

    /// <summary>Anything else: NATS INFO, a NATS payload line, SSMP <c>000 . PONG</c>.</summary>
    Other,
}

/// <summary>
/// The few requests the load generator sends, pre-encoded, and the classification of what comes back, for one
/// protocol. The generator sends text payloads without LF, so every message the target sends is one or two lines.
/// </summary>
internal abstract class WireDialect
{
    /// <summary>Bytes of a line's start that <see cref="Classify"/> and <see cref="PayloadAfter"/> need.</summary>
    public abstract int LineStartLength { get; }

    public abstract string TargetName { get; }

    /// <summary>Logs in (SSMP) or connects (NATS) as <paramref name="id"/>, subscribing to <paramref name="topic"/> when given.</summary>
    /// <param name="replies">Lines of kind Ok or Pong that confirm all of it was processed.</param>
    public abstract byte[] Setup(string id, string? topic, out int replies);

    /// <summary>A message to the one connection set up as <paramref name="id"/>.</summary>
    public abstract byte[] Unicast(string id, ReadOnlySpan<byte> payload);

    /// <summary>A message to every subscriber of <paramref name="topic"/>.</summary>
    public abstract byte[] Multicast(string topic, ReadOnlySpan<byte> payload);

    /// <summary>The answer to a server PING.</summary>
    public abstract byte[] PingReply { get; }

    /// <summary>
    /// Whether a connection must subscribe to its own id to receive unicasts (NATS: a subject per connection;
    /// SSMP: the login id is the address).
    /// </summary>
    public abstract bool UnicastNeedsSubscription { get; }

    /// <summary>Whether each Unicast and Multicast gets a response (SSMP: one per request; NATS with verbose off: none).</summary>
    public abstract bool RespondsToEveryRequest { get; }

    public abstract LineKind Classify(ReadOnlySpan<byte> lineStart);

    /// <summary>
    /// Bytes that follow a delivery line as its payload (NATS: the size the MSG line gives, plus CRLF), which the
    /// reader skips without scanning; 0 when the payload is on the line itself (SSMP) or the size is unknown.
    /// </summary>
    public virtual int PayloadAfter(ReadOnlySpan<byte> deliveryLine) => 0;

    public static WireDialect Ssmp { get; } = new SsmpDialect();

    public static WireDialect Nats { get; } = new NatsDialect();

    private sealed class SsmpDialect : WireDialect
    {
        public override string TargetName => "skymesh";

        public override byte[] PingReply { get; } = "PONG\n"u8.ToArray();

        public override int LineStartLength => 8;

        public override bool RespondsToEveryRequest => true;

        public override bool UnicastNeedsSubscription => false;

        public override byte[] Setup(string id, string? topic, out int replies)
        {
            var writer = new ArrayBufferWriter<byte>();
            SsmpWriter.WriteLogin(writer, id, "open", default);
            replies = 1;
            if (topic is not null)
            {
                SsmpWriter.WriteSubscribe(writer, topic, presence: false);
                replies++;
            }
            return writer.WrittenSpan.ToArray();
        }

        public override byte[] Unicast(string id, ReadOnlySpan<byte> payload)
        {
            var writer = new ArrayBufferWriter<byte>();
            SsmpWriter.WriteUcast(writer, id, payload);
            return writer.WrittenSpan.ToArray();
        }

        public override byte[] Multicast(string topic, ReadOnlySpan<byte> payload)
        {
            var writer = new ArrayBufferWriter<byte>();
            SsmpWriter.WriteMcast(writer, topic, payload);
            return writer.WrittenSpan.ToArray();
        }

        // Responses are three digits and never 000, so a line starting with '0' is an event ("000 from ...").
        // The generator never logs in anonymously: an event from "." is the server's own PING or PONG.
        public override LineKind Classify(ReadOnlySpan<byte> line)
        {
            if (line.IsEmpty)
                return LineKind.Other;
            return line[0] switch
            {
                (byte)'0' when line.Length >= 5 && line[4] == '.' => line.StartsWith("000 . PING"u8[..8]) ? LineKind.Ping : LineKind.Other,
                (byte)'0' => LineKind.Delivery,
                (byte)'2' => LineKind.Ok,
                >= (byte)'1' and <= (byte)'9' => LineKind.Error,
                _ => LineKind.Other,
            };
        }
    }

    private sealed class NatsDialect : WireDialect
    {
        public override string TargetName => "nats";

        public override byte[] PingReply { get; } = "PONG\r\n"u8.ToArray();

        // Enough for "MSG subject sid size" with the generator's short subjects.
        public override int LineStartLength => 64;

        // MSG <subject> <sid> [reply-to] <#bytes>: the size is the last field.
        public override int PayloadAfter(ReadOnlySpan<byte> line)
        {
            if (line.EndsWith((byte)'\r'))
                line = line[..^1];
            var space = line.LastIndexOf((byte)' ');
            return space > 0 && System.Buffers.Text.Utf8Parser.TryParse(line[(space + 1)..], out int size, out var used) && used == line.Length - space - 1
                ? size + 2
                : 0;
        }

        public override bool RespondsToEveryRequest => false;

        public override bool UnicastNeedsSubscription => true;

        // verbose:false means no +OK per request; the PING at the end is answered with PONG once everything
        // before it has been processed, which is how NATS clients flush.
        public override byte[] Setup(string id, string? topic, out int replies)
        {
            var text = new StringBuilder("CONNECT {\"verbose\":false,\"pedantic\":false}\r\n");
            if (topic is not null)
                text.Append("SUB ").Append(topic).Append(" 1\r\n");
            text.Append("PING\r\n");
            replies = 1;
            return Encoding.ASCII.GetBytes(text.ToString());
        }

        public override byte[] Unicast(string id, ReadOnlySpan<byte> payload) => Publish(id, payload);

        public override byte[] Multicast(string topic, ReadOnlySpan<byte> payload) => Publish(topic, payload);

        private static byte[] Publish(string subject, ReadOnlySpan<byte> payload)
        {
            var head = Encoding.ASCII.GetBytes($"PUB {subject} {payload.Length}\r\n");
            var bytes = new byte[head.Length + payload.Length + 2];
            head.CopyTo(bytes, 0);
            payload.CopyTo(bytes.AsSpan(head.Length));
            "\r\n"u8.CopyTo(bytes.AsSpan(head.Length + payload.Length));
            return bytes;
        }

        public override LineKind Classify(ReadOnlySpan<byte> line)
        {
            if (line.StartsWith("MSG "u8))
                return LineKind.Delivery;
            if (line.StartsWith("PING"u8))
                return LineKind.Ping;
            if (line.StartsWith("PONG"u8))
                return LineKind.Pong;
            if (line.StartsWith("+OK"u8))
                return LineKind.Ok;
            if (line.StartsWith("-ERR"u8))
                return LineKind.Error;
            return LineKind.Other;
        }
    }
}
