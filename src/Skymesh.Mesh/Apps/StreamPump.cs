using System.Buffers;
using System.Net.Sockets;
using Skymesh.Identity;
using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Apps;

/// <summary>What one joined connection carried.</summary>
public readonly record struct PumpResult(long BytesUp, long BytesDown, Exception? Error);

/// <summary>
/// Joins a TCP socket and a path stream, both ways, with half-closes passed through: when the socket's peer
/// stops sending, the stream is completed (the far end reads its end), and when the stream ends the socket's
/// sending side is shut down. A failure on either side aborts the other, so nothing waits forever.
/// </summary>
public static class StreamPump
{
    private const int BufferSize = 64 * 1024;

    public static async Task<PumpResult> RunAsync(Socket socket, ReliableStream stream, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(socket);
        ArgumentNullException.ThrowIfNull(stream);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        long up = 0, down = 0;
        Exception? error = null;

        async Task Up()
        {
            var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
            try
            {
                while (true)
                {
                    var n = await socket.ReceiveAsync(buffer.AsMemory(), SocketFlags.None, stop.Token);
                    if (n == 0)
                        break;
                    await stream.WriteAsync(buffer.AsMemory(0, n), stop.Token);
                    up += n;
                }
                await stream.CompleteAsync(stop.Token);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        async Task Down()
        {
            var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
            try
            {
                while (true)
                {
                    var n = await stream.ReadAsync(buffer.AsMemory(), stop.Token);
                    if (n == 0)
                        break;
                    var sent = 0;
                    while (sent < n)
                        sent += await socket.SendAsync(buffer.AsMemory(sent, n - sent), SocketFlags.None, stop.Token);
                    down += n;
                }
                socket.Shutdown(SocketShutdown.Send);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
        }

        async Task Guard(Func<Task> direction)
        {
            try
            {
                await direction();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                if (Interlocked.CompareExchange(ref error, e, null) is null && !stop.IsCancellationRequested)
                {
                    // One side failed: the other cannot finish, so stop it too and tell the far end.
                    stream.Abort(e is SocketException or IOException ? "the local connection failed" : e.Message);
                    await Background.CancelAsync(stop);
                }
            }
        }

        await Task.WhenAll(Background.Run(() => Guard(Up)), Background.Run(() => Guard(Down)));
        if (error is not null)
            socket.Close(0);
        else
            socket.Close();
        await stream.DisposeAsync();
        return new PumpResult(up, down, error is OperationCanceledException && cancellationToken.IsCancellationRequested ? null : error);
    }
}
