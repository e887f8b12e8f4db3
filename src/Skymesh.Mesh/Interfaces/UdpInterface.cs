using System.Net;
using System.Net.Sockets;

namespace Skymesh.Mesh.Interfaces;

/// <summary>
/// A UDP interface: one socket serves every link on it, frames are datagrams, and the remote address
/// tells which link a frame belongs to. Sending never blocks: when the socket's buffer is full the frame
/// is dropped and counted, as a router would; reliable paths above recover it.
/// </summary>
public sealed class UdpInterface : IMeshInterface
{
    /// <summary>Default MTU on loopback: the largest datagram.</summary>
    public const int LoopbackMtu = Wire.MeshWire.MaxFrameLength;

    /// <summary>Default MTU on real networks: fits an Ethernet frame with IP and UDP headers and some tunnelling.</summary>
    public const int InternetMtu = 1400;

    private readonly Socket _socket;
    private readonly CancellationTokenSource _closing = new();
    private Task? _loop;
    private int _closed;

    public UdpInterface(IPEndPoint bind, int? mtu = null, string? name = null, int socketBufferBytes = 4 * 1024 * 1024)
    {
        ArgumentNullException.ThrowIfNull(bind);
        Mtu = mtu ?? (IPAddress.IsLoopback(bind.Address) ? LoopbackMtu : InternetMtu);
        if (Mtu is < Wire.MeshWire.MinMtu or > Wire.MeshWire.MaxFrameLength)
            throw new ArgumentOutOfRangeException(nameof(mtu), Mtu, $"An MTU is {Wire.MeshWire.MinMtu} to {Wire.MeshWire.MaxFrameLength} bytes.");
        _socket = new Socket(bind.AddressFamily, SocketType.Dgram, ProtocolType.Udp);
        try
        {
            _socket.ReceiveBufferSize = socketBufferBytes;
            _socket.SendBufferSize = socketBufferBytes;
            _socket.Bind(bind);
            _socket.Blocking = false;
        }
        catch (SocketException e)
        {
            _socket.Dispose();
            throw new InvalidOperationException($"Cannot bind UDP {bind}: {e.Message}", e);
        }
        Name = name ?? $"udp:{_socket.LocalEndPoint}";
    }

    public string Name { get; }

    public int Mtu { get; }

    public EndPoint LocalEndPoint => _socket.LocalEndPoint!;

    public InterfaceCounters Counters { get; } = new();

    public void Start(FrameHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (_loop is not null)
            throw new InvalidOperationException("The interface has already started.");
        _loop = Task.Run(() => ReceiveLoopAsync(handler));
    }

    private async Task ReceiveLoopAsync(FrameHandler handler)
    {
        // One buffer for the interface's life: a datagram is handled before the next is read.
        var buffer = GC.AllocateUninitializedArray<byte>(Wire.MeshWire.MaxFrameLength + 1, pinned: true);
        EndPoint any = _socket.AddressFamily == AddressFamily.InterNetworkV6 ? new IPEndPoint(IPAddress.IPv6Any, 0) : new IPEndPoint(IPAddress.Any, 0);
        var address = new SocketAddress(_socket.AddressFamily);
        var endpoints = new Dictionary<SocketAddress, EndPoint>();
        while (!_closing.IsCancellationRequested)
        {
            int n;
            try
            {
                n = await _socket.ReceiveFromAsync(buffer, SocketFlags.None, address, _closing.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (ObjectDisposedException)
            {
                break;
            }
            catch (SocketException) when (_closing.IsCancellationRequested)
            {
                // Closing: a receive cancelled as it started, or cut off by the socket's disposal, can end in
                // OperationAborted rather than OperationCanceledException. Either way the loop is done, and
                // DisposeAsync, which awaits it, must not fail for it.
                break;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.MessageSize or SocketError.ConnectionRefused)
            {
                // ICMP errors from earlier sends and oversize datagrams: not fatal for the interface.
                Counters.ReceiveDropped();
                continue;
            }
            if (n > Mtu)
            {
                Counters.ReceiveDropped();
                continue;
            }
            // Remote addresses are few (one per link): keep one EndPoint object each instead of one per datagram.
            if (!endpoints.TryGetValue(address, out var remote))
            {
                remote = any.Create(address);
                if (endpoints.Count > 100_000)
                    endpoints.Clear();
                var key = new SocketAddress(address.Family, address.Size);
                address.Buffer.Span[..address.Size].CopyTo(key.Buffer.Span);
                endpoints[key] = remote;
            }
            Counters.Received(n);
            try
            {
                handler(this, remote, buffer.AsSpan(0, n));
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // A fault in whoever handles frames must not stop the interface for every other link.
                Counters.HandlerFailed(e);
            }
        }
    }

    public bool TrySend(EndPoint to, ReadOnlySpan<byte> frame)
    {
        if (Volatile.Read(ref _closed) != 0 || frame.Length > Mtu)
        {
            Counters.SendDropped();
            return false;
        }
        try
        {
            _socket.SendTo(frame, SocketFlags.None, to);
        }
        catch (SocketException)
        {
            // WouldBlock (buffer full), unreachable, refused: the frame is lost, as on any network.
            Counters.SendDropped();
            return false;
        }
        catch (ObjectDisposedException)
        {
            Counters.SendDropped();
            return false;
        }
        Counters.Sent(frame.Length);
        return true;
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
            return;
        await _closing.CancelAsync();
        _socket.Dispose();
        if (_loop is not null)
            await _loop;
        _closing.Dispose();
    }
}
