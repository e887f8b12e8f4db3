using System.Diagnostics.CodeAnalysis;
using System.Threading.Channels;

namespace Skymesh.Mesh.Paths;

/// <summary>Takes one datagram as it arrives; true when it was taken.</summary>
public delegate bool DatagramHandler(ReadOnlySpan<byte> datagram);

/// <summary>
/// Datagrams on a path (type 16): each one sealed like every path message when the path is encrypted, but
/// neither acknowledged, ordered nor retransmitted. For applications that do their own recovery (voice,
/// games, DNS). Received datagrams wait in a bounded queue; when it is full, new ones are dropped and counted.
/// </summary>
public sealed class PathDatagramEndpoint
{
    private readonly PathEndpoint _endpoint;
    private readonly Channel<byte[]> _queue;
    private long _sent;
    private long _received;
    private long _dropped;

    internal PathDatagramEndpoint(PathEndpoint endpoint, int queueCapacity)
    {
        _endpoint = endpoint;
        _queue = Channel.CreateBounded<byte[]>(new BoundedChannelOptions(queueCapacity)
        {
            SingleWriter = false,
            SingleReader = false,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    /// <summary>Largest datagram the path carries now.</summary>
    public int MaxDatagramSize => _endpoint.MessageRoom;

    public long Sent => Interlocked.Read(ref _sent);

    public long Received => Interlocked.Read(ref _received);

    /// <summary>Datagrams received and thrown away because the application did not take them in time.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Sends one datagram; false when it is larger than <see cref="MaxDatagramSize"/> or the path refused it.</summary>
    public bool TrySend(ReadOnlySpan<byte> datagram)
    {
        if (datagram.Length > MaxDatagramSize)
            return false;
        if (!_endpoint.Send((byte)PathMessageType.Datagram, datagram))
            return false;
        Interlocked.Increment(ref _sent);
        return true;
    }

    /// <summary>Waits for the next datagram.</summary>
    public async ValueTask<byte[]> ReceiveAsync(CancellationToken cancellationToken = default)
    {
        try
        {
            return await _queue.Reader.ReadAsync(cancellationToken);
        }
        catch (ChannelClosedException)
        {
            throw new ObjectDisposedException(nameof(PathEndpoint));
        }
    }

    public bool TryReceive([MaybeNullWhen(false)] out byte[] datagram) => _queue.Reader.TryRead(out datagram);

    /// <summary>
    /// Sees each datagram as it arrives, on the receive thread, before it is queued: true when it took the datagram
    /// (then it is not queued). For carriers of many small datagrams (IP packets) that should not copy each one. It
    /// must not block.
    /// </summary>
    public DatagramHandler? Handler { get; set; }

    internal bool OnDatagram(ReadOnlySpan<byte> payload)
    {
        Interlocked.Increment(ref _received);
        if (Handler is { } handler && handler(payload))
            return true;
        if (!_queue.Writer.TryWrite(payload.ToArray()))
            Interlocked.Increment(ref _dropped);
        return true;
    }

    internal void Complete() => _queue.Writer.TryComplete();
}
