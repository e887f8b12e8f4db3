using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Skymesh.Identity;
using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Apps;

/// <summary>
/// The destination side of application streams: reads a stream's service request, checks it against the
/// node's <see cref="ExitPolicy"/>, connects to the target and joins the two. Refusals are answered with a
/// status the opener turns into a clear error.
/// </summary>
public sealed partial class StreamExit(ExitPolicy policy, ILogger? logger = null)
{
    private readonly ILogger _logger = logger ?? NullLogger.Instance;
    private long _served;
    private long _refused;
    private long _active;
    private long _bytesUp;
    private long _bytesDown;

    private volatile ExitPolicy _policy = policy;

    /// <summary>What this node lets its peers reach; replaced whole when its owner changes it (streams already joined stay).</summary>
    public ExitPolicy Policy
    {
        get => _policy;
        set => _policy = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>
    /// Called when a peer asks for a target the policy does not allow: the peer, the host and the port. It may record
    /// the request for the node's owner to decide on, and returns a sentence added to the refusal (or null).
    /// </summary>
    public Func<string, string, int, string?>? NotAllowed { get; set; }

    /// <summary>How long an opener has to send its request, and a target to accept the connection.</summary>
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>The clock of the timeouts (virtual in tests and the simulator).</summary>
    public TimeProvider Time { get; init; } = TimeProvider.System;

    public long Served => Interlocked.Read(ref _served);

    public long Refused => Interlocked.Read(ref _refused);

    public long Active => Interlocked.Read(ref _active);

    /// <summary>Bytes carried from openers to targets, and back.</summary>
    public long BytesToTargets => Interlocked.Read(ref _bytesUp);

    public long BytesFromTargets => Interlocked.Read(ref _bytesDown);

    /// <summary>Serves one stream the peer opened, until it ends. Never throws for what the peer or the target does.</summary>
    /// <param name="otherService">
    /// Serves a request of another kind than <see cref="ServiceKind.TcpConnect"/> (the VPN): it answers the request
    /// itself and owns the stream; null refuses such requests.
    /// </param>
    public async Task ServeAsync(ReliableStream stream, string from, CancellationToken cancellationToken,
        Func<ServiceKind, string, ReliableStream, Task>? otherService = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var io = stream.AsStream();
        Socket? socket = null;
        try
        {
            string target;
            using (var deadline = new Deadline(Timeout, Time, cancellationToken))
            {
                ServiceKind kind;
                try
                {
                    (kind, target) = await ServiceWire.ReadRequestAsync(io, deadline.Token);
                }
                catch (InvalidDataException e)
                {
                    await RefuseAsync(stream, ServiceStatus.BadRequest, e.Message, from, "?");
                    return;
                }
                if (kind != ServiceKind.TcpConnect && otherService is not null)
                {
                    await otherService(kind, target, stream);
                    return;
                }
                if (kind != ServiceKind.TcpConnect || !ServiceWire.TryParseTarget(target, out var host, out var port))
                {
                    await RefuseAsync(stream, ServiceStatus.BadRequest, kind != ServiceKind.TcpConnect ? $"unknown service {(byte)kind}" : "the target is not host:port", from, target);
                    return;
                }
                IPAddress[] addresses;
                if (IPAddress.TryParse(host, out var literal))
                {
                    addresses = [literal];
                }
                else
                {
                    try
                    {
                        addresses = await Dns.GetHostAddressesAsync(host, deadline.Token);
                    }
                    catch (SocketException e)
                    {
                        await RefuseAsync(stream, ServiceStatus.HostUnknown, e.Message, from, target);
                        return;
                    }
                }
                var allowed = addresses.Where(a => Policy.Allows(host, a, port)).ToArray();
                if (allowed.Length == 0)
                {
                    var note = addresses.Length == 0 ? null : NotAllowed?.Invoke(from, host, port);
                    await RefuseAsync(stream, addresses.Length == 0 ? ServiceStatus.HostUnknown : ServiceStatus.NotAllowed, note ?? "", from, target);
                    return;
                }
                try
                {
                    socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                    await socket.ConnectAsync(allowed, port, deadline.Token);
                }
                catch (Exception e) when (e is SocketException or OperationCanceledException && !cancellationToken.IsCancellationRequested)
                {
                    socket?.Dispose();
                    socket = null;
                    await RefuseAsync(stream, ServiceStatus.ConnectFailed, e is SocketException s ? s.Message : "timed out", from, target);
                    return;
                }
            }
            await stream.WriteAsync(ServiceWire.EncodeResponse(ServiceStatus.Ok, ""), cancellationToken);
            Interlocked.Increment(ref _served);
            Interlocked.Increment(ref _active);
            Log.Connected(_logger, stream.Id, from, target);
            try
            {
                var result = await StreamPump.RunAsync(socket, stream, cancellationToken);
                socket = null;
                Interlocked.Add(ref _bytesUp, result.BytesUp);
                Interlocked.Add(ref _bytesDown, result.BytesDown);
                Log.Finished(_logger, stream.Id, target, result.BytesUp, result.BytesDown, result.Error?.Message ?? "closed");
            }
            finally
            {
                Interlocked.Decrement(ref _active);
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The stream failed (path lost, peer aborted) or the node is stopping: nothing more to do.
            stream.Abort(cancellationToken.IsCancellationRequested ? "node stopping" : "service failed");
            Log.Failed(_logger, stream.Id, from, e.Message);
        }
        finally
        {
            socket?.Dispose();
        }
    }

    private async Task RefuseAsync(ReliableStream stream, ServiceStatus status, string message, string from, string target)
    {
        Interlocked.Increment(ref _refused);
        Log.Refused(_logger, stream.Id, from, target, status.ToString(), message);
        await stream.WriteAsync(ServiceWire.EncodeResponse(status, message));
        await stream.DisposeAsync();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 500, Level = LogLevel.Information, Message = "Stream {Id} from {From}: connected to {Target}")]
        public static partial void Connected(ILogger logger, uint id, string from, string target);

        [LoggerMessage(EventId = 501, Level = LogLevel.Information, Message = "Stream {Id} to {Target} finished: {Up} bytes out, {Down} bytes back ({Reason})")]
        public static partial void Finished(ILogger logger, uint id, string target, long up, long down, string reason);

        [LoggerMessage(EventId = 502, Level = LogLevel.Warning, Message = "Stream {Id} from {From} to {Target} refused: {Status} {Message}")]
        public static partial void Refused(ILogger logger, uint id, string from, string target, string status, string message);

        [LoggerMessage(EventId = 503, Level = LogLevel.Debug, Message = "Stream {Id} from {From} failed: {Error}")]
        public static partial void Failed(ILogger logger, uint id, string from, string error);
    }
}
