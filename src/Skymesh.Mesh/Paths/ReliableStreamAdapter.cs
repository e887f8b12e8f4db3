namespace Skymesh.Mesh.Paths;

/// <summary>
/// <see cref="Stream"/> over a <see cref="ReliableStream"/>, for code written against streams (port
/// forwarding, SOCKS, <see cref="Stream.CopyToAsync(Stream)"/>). Writes are sent as the windows allow, so
/// flushing does nothing. Disposing closes the stream as a socket closes.
/// </summary>
internal sealed class ReliableStreamAdapter(ReliableStream stream) : Stream
{
    public override bool CanRead => true;

    public override bool CanWrite => true;

    public override bool CanSeek => false;

    public override long Length => throw new NotSupportedException("A path stream has no length.");

    public override long Position
    {
        get => throw new NotSupportedException("A path stream cannot seek.");
        set => throw new NotSupportedException("A path stream cannot seek.");
    }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        stream.ReadAsync(buffer, cancellationToken);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        stream.ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
        stream.WriteAsync(buffer, cancellationToken);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        stream.WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    // The synchronous members block the caller until the asynchronous operation completes. That cannot
    // deadlock: the stream completes its operations from the receive loop and its timer, never from the
    // caller's context.
    public override int Read(byte[] buffer, int offset, int count) =>
        stream.ReadAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override void Write(byte[] buffer, int offset, int count) =>
        stream.WriteAsync(buffer.AsMemory(offset, count)).AsTask().GetAwaiter().GetResult();

    public override void Flush()
    {
    }

    public override Task FlushAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException("A path stream cannot seek.");

    public override void SetLength(long value) => throw new NotSupportedException("A path stream has no length.");

    protected override void Dispose(bool disposing)
    {
        if (disposing)
            stream.Close();
        base.Dispose(disposing);
    }

    public override ValueTask DisposeAsync()
    {
        stream.Close();
        return base.DisposeAsync();
    }
}
