using System.Security.Cryptography;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Tests.Paths;

/// <summary>
/// Two path endpoints, A (the initiator) and B, joined by a simulated channel in each direction, on one
/// <see cref="FakeTimeProvider"/>. Tests drive it from their own thread — advance time, pump reads and writes —
/// so nothing runs concurrently and a run repeats exactly.
/// </summary>
internal sealed class PathHarness : IAsyncDisposable
{
    public const int UdpPayload = 1364; // a 1,400-byte link MTU less frame, message header and link tag

    private readonly int _seed;
    private int _channels;

    private PathHarness(Conditions forward, Conditions backward, int maxPayload, PathEndpointOptions? options, bool encrypted, int seed)
    {
        _seed = seed;
        AtoB = NewChannel(forward, maxPayload);
        BtoA = NewChannel(backward, maxPayload);
        var baseOptions = options ?? new PathEndpointOptions();
        PathCipher? cipherA = null, cipherB = null;
        if (encrypted)
        {
            cipherA = new PathCipher(KeyAtoB, KeyBtoA);
            cipherB = new PathCipher(KeyBtoA, KeyAtoB);
        }
        A = new PathEndpoint(AtoB, baseOptions with { IsInitiator = true, PeerName = "B" }, cipherA, Time);
        B = new PathEndpoint(BtoA, baseOptions with { IsInitiator = false, PeerName = "A" }, cipherB, Time);
        AtoB.Deliver = (type, payload) => B.OnMessage(type, payload);
        BtoA.Deliver = (type, payload) => A.OnMessage(type, payload);
        Start = Time.GetUtcNow();
    }

    public static byte[] KeyAtoB { get; } = Enumerable.Range(0, 32).Select(i => (byte)i).ToArray();

    public static byte[] KeyBtoA { get; } = Enumerable.Range(100, 32).Select(i => (byte)i).ToArray();

    public FakeTimeProvider Time { get; } = new(new DateTimeOffset(2025, 1, 1, 0, 0, 0, TimeSpan.Zero));

    public DateTimeOffset Start { get; }

    public TimeSpan Elapsed => Time.GetUtcNow() - Start;

    public SimulatedChannel AtoB { get; private set; }

    public SimulatedChannel BtoA { get; private set; }

    public PathEndpoint A { get; }

    public PathEndpoint B { get; }

    public static PathHarness Create(Conditions? forward = null, Conditions? backward = null, int maxPayload = UdpPayload,
        PathEndpointOptions? options = null, bool encrypted = false, int seed = 1) =>
        new(forward ?? Conditions.Clean, backward ?? forward ?? Conditions.Clean, maxPayload, options, encrypted, seed);

    /// <summary>A fresh pair of channels (a repaired path); A and B retarget onto it.</summary>
    public void Repair(Conditions forward, Conditions? backward = null, int? maxPayload = null)
    {
        var atoB = NewChannel(forward, maxPayload ?? AtoB.MaxPayload);
        var btoA = NewChannel(backward ?? forward, maxPayload ?? BtoA.MaxPayload);
        atoB.Deliver = (type, payload) => B.OnMessage(type, payload);
        btoA.Deliver = (type, payload) => A.OnMessage(type, payload);
        AtoB.Dead = true;
        BtoA.Dead = true;
        AtoB = atoB;
        BtoA = btoA;
        A.Retarget(atoB);
        B.Retarget(btoA);
    }

    /// <summary>A opens a stream and writes one byte so B sees it; returns both ends once B accepted it.</summary>
    public (ReliableStream AtA, ReliableStream AtB) OpenStream()
    {
        var atA = A.OpenStream();
        Assert.True(atA.WriteAsync(new byte[] { 0x5A }).IsCompletedSuccessfully);
        ReliableStream? atB = null;
        Assert.True(RunUntil(() => B.TryAcceptStream(out atB), TimeSpan.FromSeconds(10)), "B never saw the stream A opened");
        var one = new byte[1];
        var read = atB!.ReadAsync(one);
        for (var i = 0; i < 10_000 && !read.IsCompleted; i++)
            Time.Advance(TimeSpan.FromMilliseconds(1));
        Assert.True(read.IsCompletedSuccessfully);
        Assert.Equal(1, read.Result);
        Assert.Equal(0x5A, one[0]);
        return (atA, atB!);
    }

    /// <summary>
    /// Advances virtual time by <paramref name="duration"/> in 1 ms steps. (One big FakeTimeProvider step would
    /// show every timer callback in it the final time, as if everything happened at the end.)
    /// </summary>
    public void Run(TimeSpan duration) => RunUntil(static () => false, duration);

    /// <summary>Advances virtual time in steps until <paramref name="done"/> holds or <paramref name="limit"/> passed; returns whether it holds.</summary>
    public bool RunUntil(Func<bool> done, TimeSpan limit, TimeSpan? step = null)
    {
        var end = Time.GetUtcNow() + limit;
        var by = step ?? TimeSpan.FromMilliseconds(1);
        while (!done())
        {
            if (Time.GetUtcNow() >= end)
                return false;
            Time.Advance(by);
        }
        return true;
    }

    private SimulatedChannel NewChannel(Conditions conditions, int maxPayload) =>
        new(Time, conditions, maxPayload, _seed * 1000 + _channels++);

    public async ValueTask DisposeAsync()
    {
        await A.DisposeAsync();
        await B.DisposeAsync();
    }
}

/// <summary>
/// Pushes a pseudo-random byte sequence through a stream and reads it at the other end, without blocking:
/// each <see cref="Pump"/> starts what can start and collects what finished. SHA-256 of both sides is kept.
/// </summary>
internal sealed class Transfer : IDisposable
{
    private readonly ReliableStream _writer;
    private readonly ReliableStream _reader;
    private readonly Random _data;
    private readonly byte[] _writeBuffer;
    private readonly byte[] _readBuffer;
    private readonly IncrementalHash _sentHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly IncrementalHash _receivedHash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private ValueTask? _pendingWrite;
    private ValueTask<int>? _pendingRead;
    private readonly Action<Span<byte>, long>? _fill;
    private Task? _completion;

    public Transfer(ReliableStream writer, ReliableStream reader, long total, int seed = 7, int chunk = 64 * 1024, bool complete = true,
        Action<Span<byte>, long>? fill = null)
    {
        _fill = fill;
        _writer = writer;
        _reader = reader;
        Total = total;
        Complete = complete;
        _data = new Random(seed);
        _writeBuffer = new byte[chunk];
        _readBuffer = new byte[chunk];
    }

    public long Total { get; }

    /// <summary>Whether the writer completes the stream after the last byte.</summary>
    public bool Complete { get; }

    /// <summary>Set false to stop reading (a slow application).</summary>
    public bool Reading { get; set; } = true;

    public long Written { get; private set; }

    public long Read { get; private set; }

    public bool EndOfStream { get; private set; }

    public Exception? WriterError { get; private set; }

    public Exception? ReaderError { get; private set; }

    /// <summary>The writer's completion, once all data was written and the stream completed.</summary>
    public Task? Completion => _completion;

    public bool Done => EndOfStream && (!Complete || _completion is { IsCompleted: true });

    public bool Failed => WriterError is not null && ReaderError is not null;

    public byte[] SentHash => _sentHash.GetCurrentHash();

    public byte[] ReceivedHash => _receivedHash.GetCurrentHash();

    /// <summary>Called from the harness loop: moves data as far as it goes without waiting.</summary>
    public bool Pump()
    {
        PumpWriter();
        PumpReader();
        return Done;
    }

    private void PumpWriter()
    {
        while (WriterError is null)
        {
            if (_pendingWrite is { } pending)
            {
                if (!pending.IsCompleted)
                    return;
                _pendingWrite = null;
                if (!Settle(pending))
                    return;
            }
            if (Written == Total)
            {
                if (Complete && _completion is null)
                    _completion = _writer.CompleteAsync();
                if (_completion is { IsFaulted: true })
                    WriterError = _completion.Exception!.InnerException;
                return;
            }
            var count = (int)Math.Min(_writeBuffer.Length, Total - Written);
            if (_fill is null)
                _data.NextBytes(_writeBuffer.AsSpan(0, count));
            else
                _fill(_writeBuffer.AsSpan(0, count), Written);
            _sentHash.AppendData(_writeBuffer, 0, count);
            Written += count;
            var write = _writer.WriteAsync(_writeBuffer.AsMemory(0, count));
            if (!write.IsCompleted)
            {
                _pendingWrite = write;
                return;
            }
            if (!Settle(write))
                return;
        }
    }

    private bool Settle(ValueTask write)
    {
        try
        {
            write.GetAwaiter().GetResult();
            return true;
        }
        catch (Exception e)
        {
            WriterError = e;
            return false;
        }
    }

    private void PumpReader()
    {
        while (ReaderError is null && !EndOfStream)
        {
            ValueTask<int> read;
            if (_pendingRead is { } pending)
            {
                if (!pending.IsCompleted)
                    return;
                _pendingRead = null;
                read = pending;
            }
            else
            {
                if (!Reading)
                    return;
                read = _reader.ReadAsync(_readBuffer);
                if (!read.IsCompleted)
                {
                    _pendingRead = read;
                    return;
                }
            }
            int count;
            try
            {
                count = read.GetAwaiter().GetResult();
            }
            catch (Exception e)
            {
                ReaderError = e;
                return;
            }
            if (count == 0)
            {
                EndOfStream = true;
                return;
            }
            _receivedHash.AppendData(_readBuffer, 0, count);
            Read += count;
        }
    }

    public void Dispose()
    {
        _sentHash.Dispose();
        _receivedHash.Dispose();
    }
}
