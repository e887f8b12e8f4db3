using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Skymesh.Bench;

/// <summary>
/// The anchor of the relay figure: plain .NET sockets on loopback, one datagram per message, no mesh code.
/// A sender thread calls <c>SendTo</c> as fast as it can; a receiver thread counts what arrives. With
/// <c>echo</c>, a third thread sits between them and sends each datagram on as it receives it (a relay that
/// does not batch).
/// </summary>
internal static class RawUdpAnchor
{
    private const int SocketBuffer = 4 * 1024 * 1024;

    /// <summary>Datagrams received per second over <paramref name="duration"/>, after <paramref name="warmup"/>.</summary>
    public static async Task<(double PerSecond, CpuSpent Cpu)> RunAsync(int payloadSize, bool relay, TimeSpan warmup, TimeSpan duration, CancellationToken cancellationToken)
    {
        using var receiver = Bind();
        using var sender = Bind();
        using var middle = relay ? Bind() : null;
        using var stop = new CancellationTokenSource();
        long received = 0;
        var threads = new List<Thread>();

        void Start(string name, Action body)
        {
            var thread = new Thread(() =>
            {
                try
                {
                    body();
                }
                catch (Exception e) when (e is SocketException or ObjectDisposedException)
                {
                    // Closed at the end of the run.
                }
            })
            { IsBackground = true, Name = name };
            threads.Add(thread);
            thread.Start();
        }

        Start("raw receiver", () =>
        {
            var buffer = new byte[65_536];
            while (!stop.IsCancellationRequested)
            {
                if (receiver.Receive(buffer) > 0)
                    Volatile.Write(ref received, received + 1);
            }
        });
        if (middle is not null)
        {
            var onward = receiver.LocalEndPoint!.Serialize();
            Start("raw relay", () =>
            {
                var buffer = new byte[65_536];
                while (!stop.IsCancellationRequested)
                {
                    var n = middle.Receive(buffer);
                    try
                    {
                        middle.SendTo(buffer.AsSpan(0, n), SocketFlags.None, onward);
                    }
                    catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.NoBufferSpaceAvailable)
                    {
                    }
                }
            });
        }
        var target = (middle ?? receiver).LocalEndPoint!.Serialize();
        Start("raw sender", () =>
        {
            var payload = new byte[payloadSize];
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    sender.SendTo(payload, SocketFlags.None, target);
                }
                catch (SocketException e) when (e.SocketErrorCode is SocketError.WouldBlock or SocketError.NoBufferSpaceAvailable)
                {
                }
            }
        });

        try
        {
            await Task.Delay(warmup, cancellationToken);
            var before = Volatile.Read(ref received);
            var cpu = CpuWindow.Start([]);
            var started = Stopwatch.GetTimestamp();
            await Task.Delay(duration, cancellationToken);
            var after = Volatile.Read(ref received);
            var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            return ((after - before) / seconds, cpu.Stop());
        }
        finally
        {
            await stop.CancelAsync();
            // Closing the sockets wakes the threads blocked in Receive.
            receiver.Dispose();
            middle?.Dispose();
            sender.Dispose();
            foreach (var thread in threads)
                thread.Join(TimeSpan.FromSeconds(2));
        }
    }

    private static Socket Bind()
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp)
        {
            ReceiveBufferSize = SocketBuffer,
            SendBufferSize = SocketBuffer,
        };
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return socket;
    }
}

/// <summary>CPU seconds over a measured interval: this process, some child processes by name, and the whole machine.</summary>
internal sealed class CpuWindow
{
    private readonly (string Name, int Pid, double Start)[] _children;
    private readonly double _self;
    private readonly double? _idle;
    private readonly long _started;

    private CpuWindow((string Name, int Pid)[] children)
    {
        _children = children.Select(c => (c.Name, c.Pid, ProcessProbe.CpuTime(c.Pid)?.TotalSeconds ?? double.NaN)).ToArray();
        _self = Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds;
        _idle = ProcessProbe.MachineIdleSeconds();
        _started = Stopwatch.GetTimestamp();
    }

    public static CpuWindow Start(IEnumerable<(string Name, int Pid)> children) => new([.. children]);

    public CpuSpent Stop()
    {
        var seconds = Stopwatch.GetElapsedTime(_started).TotalSeconds;
        var idle = ProcessProbe.MachineIdleSeconds();
        var self = Process.GetCurrentProcess().TotalProcessorTime.TotalSeconds - _self;
        var children = _children.Select(c => (c.Name, (ProcessProbe.CpuTime(c.Pid)?.TotalSeconds ?? double.NaN) - c.Start)).ToList();
        double? busy = idle is { } i && _idle is { } i0 ? Environment.ProcessorCount * seconds - (i - i0) : null;
        return new CpuSpent(seconds, self, children, busy);
    }
}

/// <summary>What one interval used: CPU seconds of the bench, of its children, and of the machine.</summary>
internal sealed record CpuSpent(double Seconds, double Bench, IReadOnlyList<(string Name, double Seconds)> Children, double? MachineBusy)
{
    /// <summary>CPU seconds of everything else on the machine (other sessions' builds, the kernel's threads).</summary>
    public double? Others => MachineBusy is { } busy ? Math.Max(0, busy - Bench - Children.Where(c => double.IsFinite(c.Seconds)).Sum(c => c.Seconds)) : null;

    public string Describe()
    {
        var c = System.Globalization.CultureInfo.InvariantCulture;
        var parts = new List<string> { string.Format(c, "bench {0:0.00}", Bench) };
        parts.AddRange(Children.Select(x => string.Format(c, "{0} {1:0.00}", x.Name, x.Seconds)));
        var line = string.Format(c, "CPU-s over {0:0.00} s: {1}", Seconds, string.Join(", ", parts));
        if (MachineBusy is { } busy)
            line += string.Format(c, "; machine busy {0:0.00} of {1:0.00}, others {2:0.00}", busy, Environment.ProcessorCount * Seconds, Others);
        return line;
    }
}
