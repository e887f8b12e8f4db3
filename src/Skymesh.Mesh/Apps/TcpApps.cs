using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Skymesh.Identity;
using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Apps;

/// <summary>Opens application streams through the mesh: the node finds the path to the destination.</summary>
public interface IStreamOpener
{
    /// <summary>A stream through the mesh to <paramref name="destination"/>, which has connected it to <paramref name="target"/>.</summary>
    /// <exception cref="ServiceRefusedException">The destination refused or could not connect.</exception>
    /// <exception cref="NoPathException">This node has no path to the destination.</exception>
    /// <exception cref="PathBrokenException">The path was lost.</exception>
    Task<ReliableStream> OpenAsync(NodeAddress destination, string target, CancellationToken cancellationToken);
}

/// <summary>This node has no path to the destination.</summary>
public sealed class NoPathException : Exception
{
    public NoPathException()
    {
    }

    public NoPathException(string message)
        : base(message)
    {
    }

    public NoPathException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

/// <summary>One connection an app listener carried, reported when it ends.</summary>
public sealed record AppConnection(string Client, string Target, long BytesUp, long BytesDown, string? Error);

/// <summary>
/// A local TCP listener whose connections are carried through the mesh: the base of <see cref="TcpForwarder"/>
/// and <see cref="Socks5Server"/>. It runs until disposed; each connection runs on its own.
/// </summary>
public abstract class TcpAppListener : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly HashSet<Task> _connections = [];
    private Task? _accepting;
    private long _accepted;
    private long _failed;
    private long _active;

    /// <summary>The clock of the listener's timeouts (virtual in tests and the simulator).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    protected TcpAppListener(IPEndPoint listen, IStreamOpener opener)
    {
        ArgumentNullException.ThrowIfNull(listen);
        Opener = opener ?? throw new ArgumentNullException(nameof(opener));
        _listener = new Socket(listen.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            _listener.Bind(listen);
            _listener.Listen(512);
        }
        catch (SocketException e)
        {
            _listener.Dispose();
            throw new InvalidOperationException($"Cannot listen on {listen}: {e.Message}", e);
        }
    }

    protected IStreamOpener Opener { get; }

    public IPEndPoint LocalEndPoint => (IPEndPoint)_listener.LocalEndPoint!;

    public long Accepted => Interlocked.Read(ref _accepted);

    public long Failed => Interlocked.Read(ref _failed);

    public long Active => Interlocked.Read(ref _active);

    /// <summary>Raised when a connection ends (from the task that carried it); handlers must not block.</summary>
    public event Action<AppConnection>? ConnectionEnded;

    public void Start() => _accepting ??= Background.Run(AcceptLoopAsync);

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException)
            {
                break;
            }
            catch (SocketException)
            {
                continue;
            }
            client.NoDelay = true;
            Interlocked.Increment(ref _accepted);
            var task = Background.Run(() => CarryAsync(client));
            lock (_connections)
                _connections.Add(task);
            _ = task.ContinueWith(t =>
            {
                lock (_connections)
                    _connections.Remove(t);
            }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    private async Task CarryAsync(Socket client)
    {
        Interlocked.Increment(ref _active);
        var name = client.RemoteEndPoint?.ToString() ?? "?";
        AppConnection ended;
        try
        {
            var (target, stream) = await OpenAsync(client, _stop.Token);
            if (stream is null)
            {
                Interlocked.Increment(ref _failed);
                ended = new AppConnection(name, target, 0, 0, "refused");
            }
            else
            {
                var result = await StreamPump.RunAsync(client, stream, _stop.Token);
                if (result.Error is not null)
                    Interlocked.Increment(ref _failed);
                ended = new AppConnection(name, target, result.BytesUp, result.BytesDown, result.Error?.Message);
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            Interlocked.Increment(ref _failed);
            ended = new AppConnection(name, "?", 0, 0, e.Message);
        }
        finally
        {
            client.Dispose();
            Interlocked.Decrement(ref _active);
        }
        ConnectionEnded?.Invoke(ended);
    }

    /// <summary>Reads what the app protocol needs from <paramref name="client"/> and opens the stream; null stream when refused (the client was told).</summary>
    protected abstract Task<(string Target, ReliableStream? Stream)> OpenAsync(Socket client, CancellationToken cancellationToken);

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
            return;
        await _stop.CancelAsync();
        _listener.Dispose();
        if (_accepting is not null)
            await _accepting;
        Task[] running;
        lock (_connections)
            running = [.. _connections];
        await Task.WhenAll(running);
        _stop.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>TCP port forwarding: every connection to the listen address is carried to <c>target</c> as seen from the destination node.</summary>
public sealed class TcpForwarder(IPEndPoint listen, IStreamOpener opener, NodeAddress destination, string target) : TcpAppListener(listen, opener)
{
    public NodeAddress Destination { get; } = destination;

    public string Target { get; } = ServiceWire.TryParseTarget(target, out _, out _) ? target : throw new ArgumentException($"\"{target}\" is not host:port.", nameof(target));

    protected override async Task<(string Target, ReliableStream? Stream)> OpenAsync(Socket client, CancellationToken cancellationToken) =>
        (Target, await Opener.OpenAsync(Destination, Target, cancellationToken));
}

/// <summary>
/// A SOCKS5 server (RFC 1928, CONNECT without authentication) whose connections leave the mesh at an exit node:
/// the target is reached from there. Failures come back to the client as SOCKS reply codes.
/// </summary>
public sealed class Socks5Server(IPEndPoint listen, IStreamOpener opener, NodeAddress exit) : TcpAppListener(listen, opener)
{
    public NodeAddress Exit { get; } = exit;

    /// <summary>How long a client has to finish the SOCKS handshake.</summary>
    public TimeSpan HandshakeTimeout { get; init; } = TimeSpan.FromSeconds(10);

    protected override async Task<(string Target, ReliableStream? Stream)> OpenAsync(Socket client, CancellationToken cancellationToken)
    {
        using var deadline = new Deadline(HandshakeTimeout, Time, cancellationToken);
        var buffer = new byte[262];
        await ReadAsync(client, buffer.AsMemory(0, 2), deadline.Token);
        if (buffer[0] != 5)
            return ("?", null);
        var methods = buffer[1];
        await ReadAsync(client, buffer.AsMemory(0, methods), deadline.Token);
        if (!buffer.AsSpan(0, methods).Contains((byte)0))
        {
            await client.SendAsync(new byte[] { 5, 0xFF }, SocketFlags.None, deadline.Token);
            return ("?", null);
        }
        await client.SendAsync(new byte[] { 5, 0 }, SocketFlags.None, deadline.Token);
        await ReadAsync(client, buffer.AsMemory(0, 4), deadline.Token);
        var command = buffer[1];
        string host;
        switch (buffer[3])
        {
            case 1:
                await ReadAsync(client, buffer.AsMemory(0, 4), deadline.Token);
                host = new IPAddress(buffer.AsSpan(0, 4)).ToString();
                break;
            case 4:
                await ReadAsync(client, buffer.AsMemory(0, 16), deadline.Token);
                host = new IPAddress(buffer.AsSpan(0, 16)).ToString();
                break;
            case 3:
                await ReadAsync(client, buffer.AsMemory(0, 1), deadline.Token);
                int length = buffer[0];
                await ReadAsync(client, buffer.AsMemory(0, length), deadline.Token);
                host = Encoding.ASCII.GetString(buffer, 0, length);
                break;
            default:
                await ReplyAsync(client, 8, deadline.Token);
                return ("?", null);
        }
        await ReadAsync(client, buffer.AsMemory(0, 2), deadline.Token);
        var target = ServiceWire.FormatTarget(host, BinaryPrimitives.ReadUInt16BigEndian(buffer));
        if (command != 1)
        {
            await ReplyAsync(client, 7, deadline.Token);
            return (target, null);
        }
        try
        {
            var stream = await Opener.OpenAsync(Exit, target, cancellationToken);
            await ReplyAsync(client, 0, cancellationToken);
            return (target, stream);
        }
        catch (Exception e) when (e is ServiceRefusedException or NoPathException or PathBrokenException or StreamAbortedException or InvalidDataException)
        {
            byte code = e switch
            {
                ServiceRefusedException { Status: ServiceStatus.NotAllowed } => 2,
                ServiceRefusedException { Status: ServiceStatus.HostUnknown } => 4,
                ServiceRefusedException { Status: ServiceStatus.ConnectFailed } => 5,
                NoPathException or PathBrokenException => 3,
                _ => 1,
            };
            await ReplyAsync(client, code, cancellationToken);
            return (target, null);
        }
    }

    private static async Task ReplyAsync(Socket client, byte code, CancellationToken cancellationToken) =>
        await client.SendAsync(new byte[] { 5, code, 0, 1, 0, 0, 0, 0, 0, 0 }, SocketFlags.None, cancellationToken);

    private static async Task ReadAsync(Socket client, Memory<byte> buffer, CancellationToken cancellationToken)
    {
        while (!buffer.IsEmpty)
        {
            var n = await client.ReceiveAsync(buffer, SocketFlags.None, cancellationToken);
            if (n == 0)
                throw new EndOfStreamException("the SOCKS client closed during the handshake");
            buffer = buffer[n..];
        }
    }
}
