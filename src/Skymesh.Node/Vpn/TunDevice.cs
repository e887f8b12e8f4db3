using System.Runtime.InteropServices;
using System.Text;

namespace Skymesh.Node.Vpn;

/// <summary>
/// A layer-3 virtual network device: the host's IP stack hands it the packets routed to it and takes the packets
/// written to it as if they had arrived on a wire. One packet per read or write, no header in front (IPv4 or IPv6,
/// told apart by the first nibble).
/// </summary>
public interface ITunDevice : IDisposable
{
    /// <summary>The device's name as the host knows it (<c>ip link</c>).</summary>
    string Name { get; }

    /// <summary>
    /// Waits for the next packet and copies it into <paramref name="buffer"/>; its length, or 0 once the device is
    /// closed. Only one reader at a time.
    /// </summary>
    int Read(Span<byte> buffer);

    /// <summary>Hands one packet to the host; false when the host refused it (its queue is full, the device is gone).</summary>
    bool Write(ReadOnlySpan<byte> packet);
}

/// <summary>
/// Opens TUN devices. Linux only today: the device is <c>/dev/net/tun</c> with <c>IFF_TUN | IFF_NO_PI</c>, which
/// needs <c>CAP_NET_ADMIN</c>. Windows would open a wintun adapter (wintun.dll's session ring) and macOS a
/// <c>utun</c> control socket (a 4-byte address-family header before each packet); both fit <see cref="ITunDevice"/>
/// and <see cref="IHostNetwork"/> without touching the VPN itself (docs/vpn.md).
/// </summary>
public static class TunDevice
{
    /// <summary>Creates (or attaches to) the device <paramref name="name"/>; it disappears when the last holder closes it.</summary>
    /// <exception cref="PlatformNotSupportedException">Not on Linux.</exception>
    /// <exception cref="IOException">The host refused: no <c>/dev/net/tun</c>, no CAP_NET_ADMIN, a name in use by another kind of device.</exception>
    public static ITunDevice Open(string name)
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException("The VPN and mesh IPv6 need a TUN device; Skymesh opens one on Linux only (Windows would need wintun, macOS utun).");
        return LinuxTun.Open(name);
    }

    /// <summary>Whether <paramref name="name"/> is a valid Linux interface name (1 to 15 bytes, no slash, space or colon).</summary>
    public static bool IsValidName(string name) =>
        name.Length is > 0 and < 16 && name.All(c => c > ' ' && c < 127 && c is not '/' and not ':') && name is not "." and not "..";
}

/// <summary>A TUN device on Linux, read in non-blocking mode with <c>poll</c> between bursts so that closing it ends a waiting read.</summary>
internal sealed class LinuxTun : ITunDevice
{
    private const int ORdWr = 2;
    private const int ONonBlock = 0x800;
    private const int OCloExec = 0x80000;
    private const ulong TunSetIff = 0x400454ca;
    private const short IffTun = 0x0001;
    private const short IffNoPi = 0x1000;
    private const int EAgain = 11;
    private const int EIntr = 4;
    private const short PollIn = 1;

    private readonly int _fd;
    private readonly Lock _lock = new();
    private volatile bool _closed;
    private bool _reading;
    private bool _released;

    private LinuxTun(int fd, string name)
    {
        _fd = fd;
        Name = name;
    }

    public string Name { get; }

    public static LinuxTun Open(string name)
    {
        if (!TunDevice.IsValidName(name))
            throw new ArgumentException($"\"{name}\" is not a valid interface name (1 to 15 characters, no '/', ':' or space).", nameof(name));
        var fd = open("/dev/net/tun", ORdWr | ONonBlock | OCloExec);
        if (fd < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            throw new IOException($"Cannot open /dev/net/tun: {Describe(errno)}{(errno is 1 or 13 ? " (the node needs CAP_NET_ADMIN, e.g. run it as root or give the binary that capability)" : "")}.");
        }
        var request = new byte[40];
        Encoding.ASCII.GetBytes(name, request);
        BitConverter.TryWriteBytes(request.AsSpan(16), (short)(IffTun | IffNoPi));
        if (ioctl(fd, TunSetIff, request) < 0)
        {
            var errno = Marshal.GetLastPInvokeError();
            close(fd);
            throw new IOException($"Cannot create the TUN device {name}: {Describe(errno)}{(errno is 1 ? " (the node needs CAP_NET_ADMIN)" : errno is 16 or 22 ? " (is the name taken by another device?)" : "")}.");
        }
        var actual = Encoding.ASCII.GetString(request, 0, 16).TrimEnd('\0');
        return new LinuxTun(fd, actual);
    }

    public int Read(Span<byte> buffer)
    {
        lock (_lock)
        {
            if (_reading)
                throw new InvalidOperationException("A TUN device has one reader.");
            if (_closed)
                return 0;
            _reading = true;
        }
        try
        {
            var poll = new PollFd { Fd = _fd, Events = PollIn };
            while (!_closed)
            {
                var n = read(_fd, ref MemoryMarshal.GetReference(buffer), buffer.Length);
                if (n > 0)
                    return (int)n;
                var errno = Marshal.GetLastPInvokeError();
                if (n < 0 && errno is not EAgain and not EIntr)
                    return 0;
                // Nothing waiting: sleep in poll until a packet comes, waking now and then to see whether the device was closed.
                poll.Revents = 0;
                _ = Poll(ref poll, 1, 200);
            }
            return 0;
        }
        finally
        {
            lock (_lock)
            {
                _reading = false;
                if (_closed)
                    Release();
            }
        }
    }

    public bool Write(ReadOnlySpan<byte> packet)
    {
        if (packet.IsEmpty)
            return false;
        lock (_lock)
        {
            // Under the lock so that the descriptor cannot be closed (and reused) during the write.
            if (_closed)
                return false;
            return write(_fd, ref MemoryMarshal.GetReference(packet), packet.Length) == packet.Length;
        }
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _closed = true;
            // A reader waiting in poll notices within one poll interval and closes the descriptor itself, so that it
            // is never closed (and perhaps reused) under a read.
            if (!_reading)
                Release();
        }
    }

    private void Release()
    {
        if (_released)
            return;
        _released = true;
        close(_fd);
    }

    private static string Describe(int errno) => Marshal.GetPInvokeErrorMessage(errno);

    [StructLayout(LayoutKind.Sequential)]
    private struct PollFd
    {
        public int Fd;
        public short Events;
        public short Revents;
    }

    [DllImport("libc", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int open([MarshalAs(UnmanagedType.LPStr)] string path, int flags);

    [DllImport("libc", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int ioctl(int fd, ulong request, byte[] argument);

    [DllImport("libc", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern nint read(int fd, ref byte buffer, nint count);

    [DllImport("libc", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern nint write(int fd, ref byte buffer, nint count);

    [DllImport("libc", EntryPoint = "poll", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int Poll(ref PollFd fds, nuint count, int timeoutMs);

    [DllImport("libc", SetLastError = true)]
    [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
    private static extern int close(int fd);
}
