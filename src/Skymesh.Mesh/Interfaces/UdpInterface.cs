using System.Net.Sockets;
using System.Net;
using Skymesh.Identity;

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

    /// <summary>Longest the receive thread waits in poll before it looks whether the interface is closing.</summary>
    private const int PollMicroseconds = 100_000;

    private readonly Socket _socket;
    private Thread? _loop;
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

    /// <summary>
    /// Starts the receive loop on a thread of its own. It waits in poll(2) and reads with a plain recvfrom, and the
    /// handler (the switch, which on a relay also seals and sends the frames it forwards) runs on it: a datagram
    /// wakes one thread, and nothing spins waiting for the next one. (An awaited ReceiveFromAsync woke the epoll
    /// thread, then a pool thread, which spun before sleeping: per frame, more CPU than a relay's own work at
    /// moderate rates.)
    /// </summary>
    public void Start(FrameHandler handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        if (_loop is not null)
            throw new InvalidOperationException("The interface has already started.");
        _loop = new Thread(() => ReceiveLoop(handler)) { IsBackground = true, Name = $"skymesh {Name}" };
        _loop.Start();
    }

    private void ReceiveLoop(FrameHandler handler)
    {
        // One buffer for the interface's life: a datagram is handled before the next is read.
        var buffer = GC.AllocateUninitializedArray<byte>(Wire.MeshWire.MaxFrameLength + 1, pinned: true);
        EndPoint any = _socket.AddressFamily == AddressFamily.InterNetworkV6 ? new IPEndPoint(IPAddress.IPv6Any, 0) : new IPEndPoint(IPAddress.Any, 0);
        var address = new SocketAddress(_socket.AddressFamily);
        var endpoints = new Dictionary<SocketAddress, EndPoint>();
        while (Volatile.Read(ref _closed) == 0)
        {
            int n;
            try
            {
                // The socket is non-blocking (sends must never wait): wait for a datagram in the kernel first.
                if (!_socket.Poll(PollMicroseconds, SelectMode.SelectRead))
                    continue;
                n = _socket.ReceiveFrom(buffer, SocketFlags.None, address);
            }
            catch (ObjectDisposedException)
            {
                break;
            }
            catch (SocketException) when (Volatile.Read(ref _closed) != 0)
            {
                break;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock)
            {
                // Poll said readable but the datagram was gone (a checksum failure, say): wait again.
                continue;
            }
            catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionReset or SocketError.MessageSize or SocketError.ConnectionRefused)
            {
                // ICMP errors from earlier sends and oversize datagrams: not fatal for the interface.
                Counters.ReceiveDropped();
                continue;
            }
            if (Volatile.Read(ref _closed) != 0)
                break;
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
        var loop = _loop;
        if (loop is not null && loop != Thread.CurrentThread)
        {
            // Closing the socket does not wake a thread in poll(2); an empty datagram to ourselves does (the
            // loop then sees the interface closed), and the poll timeout bounds the wait if it cannot be sent.
            WakeReceiver();
            _socket.Dispose();
            await Background.Run(() => loop.Join()).ConfigureAwait(false);
        }
        else
        {
            _socket.Dispose();
        }
    }

    private void WakeReceiver()
    {
        try
        {
            if (_socket.LocalEndPoint is IPEndPoint local)
            {
                var self = local.Address.Equals(IPAddress.Any) ? IPAddress.Loopback
                    : local.Address.Equals(IPAddress.IPv6Any) ? IPAddress.IPv6Loopback : local.Address;
                _socket.SendTo([], SocketFlags.None, new IPEndPoint(self, local.Port));
            }
        }
        catch (SocketException)
        {
        }
    }
}
