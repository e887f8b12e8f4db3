using System.Buffers.Binary;
using System.Text;
using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Apps;

/// <summary>What a stream opened on a path asks of the destination node (the first bytes of the stream).</summary>
public enum ServiceKind : byte
{
    /// <summary>Connect a TCP socket to the target <c>host:port</c> and join it to the stream.</summary>
    TcpConnect = 1,

    /// <summary>Begin a VPN session: the target is the session request (<c>vpn1 …</c>, docs/vpn.md); IP packets then travel as path datagrams.</summary>
    Vpn = 2,
}

/// <summary>The destination's answer to a service request (the first bytes it writes back).</summary>
public enum ServiceStatus : byte
{
    Ok = 0,

    /// <summary>The destination's exit policy does not allow this target.</summary>
    NotAllowed = 1,

    /// <summary>The target's name did not resolve.</summary>
    HostUnknown = 2,

    /// <summary>The target refused the connection, or did not answer in time.</summary>
    ConnectFailed = 3,

    /// <summary>The request was malformed or named an unknown service.</summary>
    BadRequest = 4,
}

/// <summary>
/// The small header that starts every application stream on a path (docs/apps.md): the opener writes
/// <c>version(1)=1 kind(1) length(2, big endian) target(UTF-8)</c>; the destination answers
/// <c>status(1) length(2) message(UTF-8)</c> and, when the status is <see cref="ServiceStatus.Ok"/>, the
/// stream carries the application's bytes both ways from then on.
/// </summary>
public static class ServiceWire
{
    public const byte Version = 1;

    /// <summary>Longest target or message: a DNS name (253) with a port fits easily.</summary>
    public const int MaxText = 512;

    public static byte[] EncodeRequest(ServiceKind kind, string target)
    {
        var length = Encoding.UTF8.GetByteCount(target);
        if (length is 0 or > MaxText)
            throw new ArgumentException($"A service target is 1 to {MaxText} bytes.", nameof(target));
        var bytes = new byte[4 + length];
        bytes[0] = Version;
        bytes[1] = (byte)kind;
        BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(2), (ushort)length);
        Encoding.UTF8.GetBytes(target, bytes.AsSpan(4));
        return bytes;
    }

    public static byte[] EncodeResponse(ServiceStatus status, string message)
    {
        if (message.Length > MaxText / 4)
            message = message[..(MaxText / 4)];
        var length = Encoding.UTF8.GetByteCount(message);
        var bytes = new byte[3 + length];
        bytes[0] = (byte)status;
        BinaryPrimitives.WriteUInt16BigEndian(bytes.AsSpan(1), (ushort)length);
        Encoding.UTF8.GetBytes(message, bytes.AsSpan(3));
        return bytes;
    }

    /// <summary>Reads a request; a malformed one throws <see cref="InvalidDataException"/> with the reason.</summary>
    public static async Task<(ServiceKind Kind, string Target)> ReadRequestAsync(Stream stream, CancellationToken cancellationToken)
    {
        var header = new byte[4];
        await ReadExactlyAsync(stream, header, cancellationToken);
        if (header[0] != Version)
            throw new InvalidDataException($"unsupported service request version {header[0]}");
        var length = BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(2));
        if (length is 0 or > MaxText)
            throw new InvalidDataException($"service target of {length} bytes (1 to {MaxText} allowed)");
        var text = new byte[length];
        await ReadExactlyAsync(stream, text, cancellationToken);
        string target;
        try
        {
            target = new UTF8Encoding(false, true).GetString(text);
        }
        catch (DecoderFallbackException)
        {
            throw new InvalidDataException("service target is not UTF-8");
        }
        return ((ServiceKind)header[1], target);
    }

    public static async Task<(ServiceStatus Status, string Message)> ReadResponseAsync(Stream stream, CancellationToken cancellationToken)
    {
        var header = new byte[3];
        await ReadExactlyAsync(stream, header, cancellationToken);
        var length = BinaryPrimitives.ReadUInt16BigEndian(header.AsSpan(1));
        if (length > MaxText)
            throw new InvalidDataException($"service answer of {length} bytes (at most {MaxText} allowed)");
        var text = new byte[length];
        await ReadExactlyAsync(stream, text, cancellationToken);
        return ((ServiceStatus)header[0], Encoding.UTF8.GetString(text));
    }

    /// <summary>
    /// Opens a stream on <paramref name="endpoint"/> asking the destination to connect to <paramref name="target"/>;
    /// returns it once the destination said yes, ready to carry the application's bytes.
    /// </summary>
    /// <exception cref="ServiceRefusedException">The destination refused, or could not reach the target.</exception>
    public static async Task<ReliableStream> OpenAsync(PathEndpoint endpoint, string target, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        var request = EncodeRequest(ServiceKind.TcpConnect, target);
        var stream = endpoint.OpenStream();
        try
        {
            await stream.WriteAsync(request, cancellationToken);
            var (status, message) = await ReadResponseAsync(stream.AsStream(), cancellationToken);
            if (status != ServiceStatus.Ok)
                throw new ServiceRefusedException(status, target, message);
            return stream;
        }
        catch
        {
            stream.Abort("open failed");
            await stream.DisposeAsync();
            throw;
        }
    }

    /// <summary>Splits <c>host:port</c> (an IPv6 host in brackets); false when it is not one.</summary>
    public static bool TryParseTarget(string target, out string host, out int port)
    {
        host = "";
        port = 0;
        var colon = target.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(target.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out port) || port is < 1 or > 65535)
            return false;
        host = target[..colon];
        if (host.StartsWith('[') && host.EndsWith(']'))
            host = host[1..^1];
        else if (host.Contains(':', StringComparison.Ordinal))
            return false;
        return host.Length > 0 && (System.Net.IPAddress.TryParse(host, out _) || Uri.CheckHostName(host) == UriHostNameType.Dns);
    }

    /// <summary>Writes <c>host:port</c>, bracketing an IPv6 host.</summary>
    public static string FormatTarget(string host, int port) =>
        host.Contains(':', StringComparison.Ordinal) ? $"[{host}]:{port}" : $"{host}:{port}";

    private static async Task ReadExactlyAsync(Stream stream, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        try
        {
            await stream.ReadExactlyAsync(buffer, cancellationToken);
        }
        catch (EndOfStreamException)
        {
            throw new InvalidDataException("the stream ended inside the service header");
        }
    }
}

/// <summary>The destination node refused or could not serve a stream; <see cref="Status"/> says why.</summary>
public sealed class ServiceRefusedException : Exception
{
    public ServiceRefusedException()
    {
    }

    public ServiceRefusedException(string message)
        : base(message)
    {
    }

    public ServiceRefusedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public ServiceRefusedException(ServiceStatus status, string target, string message)
        : base($"{target}: {Describe(status)}{(message.Length > 0 ? $" ({message})" : "")}")
    {
        Status = status;
    }

    public ServiceStatus Status { get; }

    private static string Describe(ServiceStatus status) => status switch
    {
        ServiceStatus.NotAllowed => "the destination node's exit policy does not allow this target",
        ServiceStatus.HostUnknown => "the destination node could not resolve the host",
        ServiceStatus.ConnectFailed => "the destination node could not connect",
        ServiceStatus.BadRequest => "the destination node did not understand the request",
        _ => $"refused with status {(byte)status}",
    };
}
