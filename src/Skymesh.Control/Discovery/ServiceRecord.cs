using System.Buffers.Binary;
using System.Text;
using Skymesh.Identity;

namespace Skymesh.Control.Discovery;

/// <summary>What a node offers in a service record.</summary>
public enum ServiceKind : byte
{
    /// <summary>Connections leave the mesh at this node, as its exit rules allow.</summary>
    Exit = 1,

    /// <summary>The same, offered to SOCKS users (<c>skymesh socks</c> takes either).</summary>
    Socks = 2,

    /// <summary>A VPN server.</summary>
    Vpn = 3,

    /// <summary>A named application listening on a port of the node.</summary>
    App = 4,
}

/// <summary>One offer in a service record.</summary>
/// <param name="Name">The app's name (1 to 32 bytes of UTF-8) for <see cref="ServiceKind.App"/>; empty for the other kinds.</param>
/// <param name="Port">The app's port on the node; 0 for the other kinds.</param>
/// <param name="PricePerMiB">What the node charges per MiB of the service, in micro-units (as link prices are).</param>
/// <param name="MaxMbps">The most the node carries for one user, in Mbit/s; 0 for no limit.</param>
/// <param name="MaxSessions">Users served at once at most; 0 for no limit.</param>
/// <param name="Region">A region tag the operator chose (0 to 32 bytes of UTF-8), e.g. "eu-west".</param>
public sealed record ServiceEntry(ServiceKind Kind, string Name = "", ushort Port = 0, uint PricePerMiB = 0, uint MaxMbps = 0, ushort MaxSessions = 0, string Region = "")
{
    /// <summary>The kind as written in node.json, the API and the CLI: exit, socks, vpn, app.</summary>
    public string KindName => Names[(int)Kind];

    private static readonly string[] Names = ["", "exit", "socks", "vpn", "app"];

    /// <summary>The kind named <paramref name="name"/> (exit, socks, vpn or app; any case).</summary>
    public static bool TryParseKind(string? name, out ServiceKind kind)
    {
        kind = default;
        for (var i = 1; i < Names.Length; i++)
        {
            if (string.Equals(Names[i], name, StringComparison.OrdinalIgnoreCase))
            {
                kind = (ServiceKind)i;
                return true;
            }
        }
        return false;
    }

    /// <summary>What is wrong with this entry as a record would carry it, or null (the rules <see cref="ServiceRecord.TryParse"/> checks).</summary>
    public string? Problem()
    {
        if (Kind is < ServiceKind.Exit or > ServiceKind.App)
            return $"{(int)Kind} is not a service kind";
        if (Name is null || Region is null)
            return "the name and the region are strings (empty when there is none)";
        var nameBytes = Encoding.UTF8.GetByteCount(Name);
        if (Kind == ServiceKind.App && nameBytes is < 1 or > ServiceRecord.MaxTextBytes)
            return $"an app's name is 1 to {ServiceRecord.MaxTextBytes} bytes of UTF-8";
        if (Kind != ServiceKind.App && nameBytes != 0)
            return $"only an app has a name, not {KindName}";
        if (Kind == ServiceKind.App && Port == 0)
            return "an app names its port on the node (1 to 65535)";
        if (Kind != ServiceKind.App && Port != 0)
            return $"only an app has a port, not {KindName}";
        if (Encoding.UTF8.GetByteCount(Region) > ServiceRecord.MaxTextBytes)
            return $"a region is at most {ServiceRecord.MaxTextBytes} bytes of UTF-8";
        if (Name.Any(char.IsControl) || Region.Any(char.IsControl))
            return "names and regions hold no control characters";
        return null;
    }

    /// <summary>The kind, with the app's name and port: <c>vpn</c>, <c>app web:8080</c>.</summary>
    public override string ToString() => Kind == ServiceKind.App ? $"app {Name}:{Port}" : KindName;
}

/// <summary>Why a service record was refused (as <see cref="Topology.AnnouncementError"/> for link announcements).</summary>
public enum ServiceRecordError
{
    None,

    /// <summary>Not a well-formed record (length, magic, counts, a kind, name, port or region out of its rules, an offer twice).</summary>
    Malformed,

    /// <summary>The signature does not verify against the node it names.</summary>
    BadSignature,

    /// <summary>Its lifetime has passed.</summary>
    Expired,

    /// <summary>Issued further in the future than the clock tolerance allows.</summary>
    FromTheFuture,

    /// <summary>An older sequence number than one already accepted from the node.</summary>
    Stale,

    /// <summary>The same sequence number as one already accepted (a replay, or the node reused a number).</summary>
    Replayed,
}

/// <summary>
/// A node's signed record of the services it offers (docs/control-plane.md, "Service discovery"): published on
/// <see cref="Topology.RouteTopics.Services"/> at start, on the refresh interval and when the offers change; a record
/// with no entries withdraws every earlier offer. Binary and canonical like the link announcement: what is signed is
/// exactly what is sent.
/// <code>
/// "SKS1" | node(32) | sequence(8) | issued ms(8) | lifetime s(4) | count(1, 0..32)
///        | count × [ kind(1) | name length(1) name | port(2) | price per MiB(4) | max Mbit/s(4) | max sessions(2) | region length(1) region ]
///        | BIP340 signature(64) by node, purpose "service-record", over everything before it
/// </code>
/// </summary>
public sealed class ServiceRecord : ISignedNodeRecord
{
    public const string SignaturePurpose = "service-record";

    /// <summary>Offers one record holds at most.</summary>
    public const int MaxEntries = 32;

    /// <summary>Bytes of UTF-8 an app's name or a region holds at most.</summary>
    public const int MaxTextBytes = 32;

    private const int HeaderLength = 4 + 32 + 8 + 8 + 4 + 1;
    private const int EntryFixedLength = 1 + 1 + 2 + 4 + 4 + 2 + 1;
    private static ReadOnlySpan<byte> Magic => "SKS1"u8;

    private ServiceRecord(NodeAddress node, ulong sequence, DateTimeOffset issued, TimeSpan lifetime, IReadOnlyList<ServiceEntry> entries, byte[] bytes)
    {
        Node = node;
        Sequence = sequence;
        Issued = issued;
        Lifetime = lifetime;
        Entries = entries;
        Bytes = bytes;
    }

    public NodeAddress Node { get; }

    public ulong Sequence { get; }

    public DateTimeOffset Issued { get; }

    public TimeSpan Lifetime { get; }

    public DateTimeOffset Expires => Issued + Lifetime;

    /// <summary>What the node offers; empty when it offers nothing now (it withdrew its offers).</summary>
    public IReadOnlyList<ServiceEntry> Entries { get; }

    /// <summary>The signed record as it travels.</summary>
    public byte[] Bytes { get; }

    /// <summary>Builds and signs a record (about 0.2 ms: one signature).</summary>
    /// <exception cref="ArgumentException">An entry breaks the rules of <see cref="ServiceEntry.Problem"/>, two entries offer the same thing, or there are too many.</exception>
    public static ServiceRecord Create(NodeKey key, ulong sequence, DateTimeOffset issued, TimeSpan lifetime, IReadOnlyList<ServiceEntry> entries)
    {
        ArgumentNullException.ThrowIfNull(key);
        ArgumentNullException.ThrowIfNull(entries);
        if (entries.Count > MaxEntries)
            throw new ArgumentException($"A record holds at most {MaxEntries} offers.", nameof(entries));
        if (lifetime <= TimeSpan.Zero || lifetime.TotalSeconds > uint.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(lifetime), lifetime, "The lifetime must be positive.");
        var offered = new HashSet<(ServiceKind, string)>();
        var length = HeaderLength;
        foreach (var entry in entries)
        {
            ArgumentNullException.ThrowIfNull(entry, nameof(entries));
            if (entry.Problem() is { } problem)
                throw new ArgumentException($"The offer {entry}: {problem}.", nameof(entries));
            if (!offered.Add((entry.Kind, entry.Name)))
                throw new ArgumentException($"{entry} is offered twice.", nameof(entries));
            length += EntryFixedLength + Encoding.UTF8.GetByteCount(entry.Name) + Encoding.UTF8.GetByteCount(entry.Region);
        }
        var bytes = new byte[length + NodeKey.SignatureLength];
        var span = bytes.AsSpan();
        Magic.CopyTo(span);
        key.Address.WriteTo(span[4..]);
        BinaryPrimitives.WriteUInt64BigEndian(span[36..], sequence);
        BinaryPrimitives.WriteInt64BigEndian(span[44..], issued.ToUnixTimeMilliseconds());
        BinaryPrimitives.WriteUInt32BigEndian(span[52..], (uint)Math.Ceiling(lifetime.TotalSeconds));
        span[56] = (byte)entries.Count;
        var offset = HeaderLength;
        foreach (var entry in entries)
        {
            span[offset++] = (byte)entry.Kind;
            offset += WriteText(span[offset..], entry.Name);
            BinaryPrimitives.WriteUInt16BigEndian(span[offset..], entry.Port);
            BinaryPrimitives.WriteUInt32BigEndian(span[(offset + 2)..], entry.PricePerMiB);
            BinaryPrimitives.WriteUInt32BigEndian(span[(offset + 6)..], entry.MaxMbps);
            BinaryPrimitives.WriteUInt16BigEndian(span[(offset + 10)..], entry.MaxSessions);
            offset += 12;
            offset += WriteText(span[offset..], entry.Region);
        }
        key.Sign(SignaturePurpose, span[..length], span[length..]);
        var parsed = TryParse(bytes, out var record);
        return parsed == ServiceRecordError.None ? record! : throw new InvalidOperationException($"A record just built does not parse: {parsed}.");
    }

    private static int WriteText(Span<byte> destination, string text)
    {
        var written = Encoding.UTF8.GetBytes(text, destination[1..]);
        destination[0] = (byte)written;
        return 1 + written;
    }

    /// <summary>
    /// Reads a record's fields without checking its signature (that is <see cref="Verify"/>, the expensive part, done
    /// after the cheap checks). Every declared length is checked against what is left before it is read.
    /// </summary>
    public static ServiceRecordError TryParse(ReadOnlySpan<byte> bytes, out ServiceRecord? record)
    {
        record = null;
        if (bytes.Length < HeaderLength + NodeKey.SignatureLength || !bytes.StartsWith(Magic))
            return ServiceRecordError.Malformed;
        var count = bytes[56];
        if (count > MaxEntries || !NodeAddress.TryFromBytes(bytes.Slice(4, 32), out var node))
            return ServiceRecordError.Malformed;
        var sequence = BinaryPrimitives.ReadUInt64BigEndian(bytes[36..]);
        var issuedMs = BinaryPrimitives.ReadInt64BigEndian(bytes[44..]);
        var lifetime = BinaryPrimitives.ReadUInt32BigEndian(bytes[52..]);
        if (issuedMs is < 0 or > 253_402_300_799_999 || lifetime == 0)
            return ServiceRecordError.Malformed;
        var body = bytes[..^NodeKey.SignatureLength];
        var offset = HeaderLength;
        var entries = new ServiceEntry[count];
        var offered = new HashSet<(ServiceKind, string)>();
        for (var i = 0; i < count; i++)
        {
            if (body.Length - offset < EntryFixedLength)
                return ServiceRecordError.Malformed;
            var kind = (ServiceKind)body[offset++];
            if (!TryReadText(body, ref offset, out var name) || body.Length - offset < 12 + 1)
                return ServiceRecordError.Malformed;
            var port = BinaryPrimitives.ReadUInt16BigEndian(body[offset..]);
            var price = BinaryPrimitives.ReadUInt32BigEndian(body[(offset + 2)..]);
            var mbps = BinaryPrimitives.ReadUInt32BigEndian(body[(offset + 6)..]);
            var sessions = BinaryPrimitives.ReadUInt16BigEndian(body[(offset + 10)..]);
            offset += 12;
            if (!TryReadText(body, ref offset, out var region))
                return ServiceRecordError.Malformed;
            var entry = new ServiceEntry(kind, name, port, price, mbps, sessions, region);
            if (entry.Problem() is not null || !offered.Add((kind, name)))
                return ServiceRecordError.Malformed;
            entries[i] = entry;
        }
        if (offset != body.Length)
            return ServiceRecordError.Malformed;
        record = new ServiceRecord(node, sequence, DateTimeOffset.FromUnixTimeMilliseconds(issuedMs), TimeSpan.FromSeconds(lifetime), entries, bytes.ToArray());
        return ServiceRecordError.None;
    }

    /// <summary>A length byte (at most <see cref="MaxTextBytes"/>) and that many bytes of valid UTF-8.</summary>
    private static bool TryReadText(ReadOnlySpan<byte> body, ref int offset, out string text)
    {
        text = "";
        if (offset >= body.Length)
            return false;
        var length = body[offset];
        if (length > MaxTextBytes || body.Length - offset - 1 < length)
            return false;
        var bytes = body.Slice(offset + 1, length);
        if (!System.Text.Unicode.Utf8.IsValid(bytes))
            return false;
        text = Encoding.UTF8.GetString(bytes);
        offset += 1 + length;
        return true;
    }

    /// <summary>Checks the signature against the node the record names (about 0.23 ms).</summary>
    public bool Verify()
    {
        var signed = Bytes.Length - NodeKey.SignatureLength;
        return Node.Verify(SignaturePurpose, Bytes.AsSpan(0, signed), Bytes.AsSpan(signed));
    }
}
