using System.Net;

namespace Skymesh.Mesh.Interfaces;

/// <summary>Called on an interface's receive loop with one frame; the frame may be decrypted in place and is valid only during the call.</summary>
public delegate void FrameHandler(IMeshInterface from, EndPoint remote, Span<byte> frame);

/// <summary>
/// A transport endpoint of a node (UDP socket, TCP listener, in-memory port): it sends frames to peer
/// addresses and hands the frames it receives to its owner. One interface serves many links.
/// </summary>
public interface IMeshInterface : IAsyncDisposable
{
    string Name { get; }

    /// <summary>Largest frame this interface sends or accepts.</summary>
    int Mtu { get; }

    EndPoint LocalEndPoint { get; }

    InterfaceCounters Counters { get; }

    /// <summary>Starts the receive loop; each frame goes to <paramref name="handler"/>.</summary>
    void Start(FrameHandler handler);

    /// <summary>Sends one frame without blocking; false (and counted) when it had to be dropped.</summary>
    bool TrySend(EndPoint to, ReadOnlySpan<byte> frame);
}

/// <summary>Counters of one interface; read them at any time.</summary>
public sealed class InterfaceCounters
{
    private long _framesSent;
    private long _bytesSent;
    private long _framesReceived;
    private long _bytesReceived;
    private long _sendDrops;
    private long _receiveDrops;

    public long FramesSent => Interlocked.Read(ref _framesSent);
    public long BytesSent => Interlocked.Read(ref _bytesSent);
    public long FramesReceived => Interlocked.Read(ref _framesReceived);
    public long BytesReceived => Interlocked.Read(ref _bytesReceived);

    /// <summary>Frames not sent: too large, send buffer full, interface closed.</summary>
    public long SendDrops => Interlocked.Read(ref _sendDrops);

    /// <summary>Frames that arrived but were thrown away before a link saw them (queue full, too large).</summary>
    public long ReceiveDrops => Interlocked.Read(ref _receiveDrops);

    internal void Sent(int bytes)
    {
        Interlocked.Increment(ref _framesSent);
        Interlocked.Add(ref _bytesSent, bytes);
    }

    /// <summary>A batch of frames written at once (a TCP connection coalesces many into one write).</summary>
    internal void Sent(int frames, long bytes)
    {
        Interlocked.Add(ref _framesSent, frames);
        Interlocked.Add(ref _bytesSent, bytes);
    }

    internal void Received(int bytes)
    {
        Interlocked.Increment(ref _framesReceived);
        Interlocked.Add(ref _bytesReceived, bytes);
    }

    /// <summary>Frames whose handler threw (a bug, counted and survived); the last such error.</summary>
    public long HandlerFaults => Interlocked.Read(ref _handlerFaults);

    public Exception? LastHandlerFault { get; private set; }

    private long _handlerFaults;

    internal void HandlerFailed(Exception e)
    {
        Interlocked.Increment(ref _handlerFaults);
        LastHandlerFault = e;
    }

    internal void SendDropped() => Interlocked.Increment(ref _sendDrops);

    internal void SendDropped(int frames) => Interlocked.Add(ref _sendDrops, frames);

    internal void ReceiveDropped() => Interlocked.Increment(ref _receiveDrops);
}
