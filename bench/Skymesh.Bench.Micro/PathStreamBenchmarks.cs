using System.Security.Cryptography;
using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Mesh.Paths;

namespace Skymesh.Bench.Micro;

/// <summary>
/// What a reliable stream costs in CPU: 16 MiB more through one open stream between two path endpoints, over
/// an unimpaired in-memory channel of UDP-sized messages (1,364 bytes), plaintext and sealed. Everything runs
/// on one thread on a FakeTimeProvider — no latency, no loss — so the figure is the stack's own cost per byte,
/// both ends together, in steady state (the stream stays open from one operation to the next). The anchors,
/// measured in the same run, do the least any such stack must: cut the bytes into the same messages and copy
/// them through the same queue, and (for the sealed case) seal and open each one as well. FakeTimeProvider
/// allocates a little on every timer change (about 28 B; ~350 KB per 16 MiB here): with an allocation-free
/// clock the streams allocate nothing.
/// </summary>
[MemoryDiagnoser]
public class PathStreamBenchmarks : IDisposable
{
    private const int Total = 16 << 20;
    private const int Payload = 1364;
    private const int Chunk = 64 * 1024;
    private static readonly byte[] KeyAtoB = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();
    private static readonly byte[] KeyBtoA = Enumerable.Range(100, 32).Select(i => (byte)i).ToArray();
    private readonly byte[] _data = new byte[Chunk];
    private readonly byte[] _readBuffer = new byte[Chunk];
    private readonly byte[] _message = new byte[Payload];
    private readonly byte[] _sealed = new byte[Payload + PathCipher.Overhead];
    private StreamPair _plain = null!;
    private StreamPair _encrypted = null!;
    private PathCipher _anchorSeal = null!;
    private PathCipher _anchorOpen = null!;

    [GlobalSetup]
    public void Setup()
    {
        new Random(1).NextBytes(_data);
        _plain = new StreamPair(encrypted: false);
        _encrypted = new StreamPair(encrypted: true);
        _anchorSeal = new PathCipher(KeyAtoB, KeyBtoA);
        _anchorOpen = new PathCipher(KeyBtoA, KeyAtoB);
    }

    [Benchmark]
    public long Stream16MiB() => _plain.Move(Total, _data, _readBuffer);

    [Benchmark]
    public long StreamSealed16MiB() => _encrypted.Move(Total, _data, _readBuffer);

    /// <summary>Anchor: the same bytes cut into the same messages, each copied into a queued buffer and copied out.</summary>
    [Benchmark]
    public long AnchorCopyThroughQueue16MiB()
    {
        var channel = _plain.AtoB;
        ReceiveHandler deliver = (_, payload) => payload.CopyTo(_readBuffer);
        long moved = 0;
        var segment = Payload - PathWire.DataHeaderLength;
        for (long offset = 0; offset < Total; offset += segment)
        {
            var length = (int)Math.Min(segment, Total - offset);
            _data.AsSpan((int)(offset % (Chunk - segment)), length).CopyTo(_message);
            channel.TrySend(17, _message.AsSpan(0, length));
            moved += channel.DeliverAll(deliver);
        }
        return moved;
    }

    /// <summary>Anchor: ChaCha20-Poly1305 sealing and opening the same number of messages.</summary>
    [Benchmark]
    public long AnchorSealAndOpen16MiB()
    {
        long moved = 0;
        var segment = Payload - PathCipher.Overhead - PathWire.DataHeaderLength;
        for (long offset = 0; offset < Total; offset += segment)
        {
            var length = (int)Math.Min(segment, Total - offset);
            var sealedLength = _anchorSeal.Seal(17, _data.AsSpan((int)(offset % (Chunk - segment)), length), _sealed);
            if (!_anchorOpen.TryOpen(17, _sealed.AsSpan(0, sealedLength), _message, out var opened))
                throw new CryptographicException("The anchor's message did not open.");
            moved += opened;
        }
        return moved;
    }

    public void Dispose()
    {
        _plain?.Dispose();
        _encrypted?.Dispose();
        _anchorSeal?.Dispose();
        _anchorOpen?.Dispose();
        GC.SuppressFinalize(this);
    }

    /// <summary>Two endpoints joined by loopback channels, with one stream open from A to B.</summary>
    private sealed class StreamPair : IDisposable
    {
        private readonly FakeTimeProvider _time = new();
        private readonly PathEndpoint _a;
        private readonly PathEndpoint _b;
        private readonly ReliableStream _writer;
        private ReliableStream? _reader;

        public StreamPair(bool encrypted)
        {
            AtoB = new LoopbackChannel(Payload);
            BtoA = new LoopbackChannel(Payload);
            _a = new PathEndpoint(AtoB, new PathEndpointOptions { IsInitiator = true }, encrypted ? new PathCipher(KeyAtoB, KeyBtoA) : null, _time);
            _b = new PathEndpoint(BtoA, new PathEndpointOptions { IsInitiator = false }, encrypted ? new PathCipher(KeyBtoA, KeyAtoB) : null, _time);
            _writer = _a.OpenStream();
        }

        public LoopbackChannel AtoB { get; }

        public LoopbackChannel BtoA { get; }

        /// <summary>Writes <paramref name="total"/> bytes at A and reads them at B, driving both ends from this thread.</summary>
        public long Move(long total, byte[] data, byte[] readBuffer)
        {
            ValueTask pendingWrite = default;
            ValueTask<int>? pendingRead = null;
            long written = 0, read = 0;
            while (read < total)
            {
                var progressed = false;
                while (written < total && pendingWrite.IsCompleted)
                {
                    pendingWrite.GetAwaiter().GetResult();
                    var count = (int)Math.Min(data.Length, total - written);
                    pendingWrite = _writer.WriteAsync(data.AsMemory(0, count));
                    written += count;
                    progressed = true;
                }
                progressed |= AtoB.DeliverAll(_b.OnMessage) > 0;
                progressed |= BtoA.DeliverAll(_a.OnMessage) > 0;
                if (_reader is null && _b.TryAcceptStream(out var accepted))
                    _reader = accepted;
                while (_reader is not null && read < total)
                {
                    var next = pendingRead ?? _reader.ReadAsync(readBuffer);
                    if (!next.IsCompleted)
                    {
                        pendingRead = next;
                        break;
                    }
                    pendingRead = null;
                    read += next.GetAwaiter().GetResult();
                    progressed = true;
                }
                // Only a delayed acknowledgement can be outstanding: let its timer fire.
                if (!progressed)
                    _time.Advance(TimeSpan.FromMilliseconds(25));
            }
            if (pendingRead is not null)
                throw new InvalidOperationException("A read was left pending past the end of the data.");
            return read;
        }

        public void Dispose()
        {
            _a.DisposeAsync().AsTask().GetAwaiter().GetResult();
            _b.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
    }

    /// <summary>Messages queued in the channel's own reused buffers, handed over when the benchmark loop says so.</summary>
    private sealed class LoopbackChannel(int maxPayload) : IPathChannel
    {
        private readonly Queue<(byte Type, byte[] Buffer, int Length)> _queue = new();
        private readonly Stack<byte[]> _free = new();

        public int MaxPayload => maxPayload;

        public bool TrySend(byte type, ReadOnlySpan<byte> payload)
        {
            if (!_free.TryPop(out var buffer))
                buffer = new byte[maxPayload];
            payload.CopyTo(buffer);
            _queue.Enqueue((type, buffer, payload.Length));
            return true;
        }

        public long DeliverAll(ReceiveHandler deliver)
        {
            long bytes = 0;
            while (_queue.TryDequeue(out var message))
            {
                deliver(message.Type, message.Buffer.AsSpan(0, message.Length));
                bytes += message.Length;
                _free.Push(message.Buffer);
            }
            return bytes;
        }
    }

    private delegate void ReceiveHandler(byte type, ReadOnlySpan<byte> payload);
}
