using BenchmarkDotNet.Attributes;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Control.Settlement;
using Skymesh.Identity;

namespace Skymesh.Bench.Micro;

/// <summary>
/// What settlement costs a node with 1,000 neighbours, each forwarding for it and it for each, at one receipt per
/// second per neighbour (docs/control-plane.md, "Settlement"). One operation of <see cref="SignerNeighbourSecond"/> is
/// one neighbour's second on the payer's side (count, then sign the receipt that is due), one of
/// <see cref="BookNeighbourSecond"/> one neighbour's second on the payee's side (count, then check and keep its
/// receipt); 1,000 of each per second is the load. The anchors, in the same run, are a bare signature and check of
/// the same 100 signed bytes. A short run (3 iterations after 3 warm-ups) is enough: every operation is a signature or
/// a check of about 0.2 ms, whose cost hardly varies.
/// </summary>
[MemoryDiagnoser]
[ShortRunJob]
public class ReceiptBenchmarks : IDisposable
{
    private const int Neighbours = 1000;
    private const int Rounds = 30;
    private const uint Price = 10;
    private const long BytesPerSecond = 125_000;
    private static readonly DateTimeOffset Start = new(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);

    private readonly byte[] _message = new byte[100];
    private readonly byte[] _signature = new byte[NodeKey.SignatureLength];
    private NodeKey _key = null!;
    private NodeKey _payee = null!;
    private Receipt _receipt = null!;
    private ulong _sequence;

    // The payer's side: this node's signer, its neighbours as payees.
    private NodeAddress[] _neighbours = [];
    private FakeTimeProvider _signerTime = null!;
    private ReceiptSigner _signer = null!;
    private int _next;

    // The payee's side: receipts its neighbours signed, offered in the order they would arrive.
    private NodeKey[] _payers = [];
    private byte[][][] _incoming = [];
    private FakeTimeProvider _bookTime = null!;
    private ReceiptBook _book = null!;
    private int _offered;

    [GlobalSetup]
    public void Setup()
    {
        new Random(1).NextBytes(_message);
        _key = NodeKey.Generate();
        _payee = NodeKey.Generate();
        _key.Sign(Receipt.SignaturePurpose, _message, _signature);
        _receipt = Receipt.Create(_key, _payee.Address, 1, 1_000_000, 10, Start);
        if (!Verify() || !ParseAndVerify())
            throw new InvalidOperationException("The benchmark's signatures do not verify.");

        _neighbours = [.. Enumerable.Range(0, Neighbours).Select(_ => { using var key = NodeKey.Generate(); return key.Address; })];
        _signerTime = new FakeTimeProvider(Start);
        _signer = new ReceiptSigner(_key, _signerTime);
        // Start every neighbour's second, so that from the first operation on, each one finds a receipt due.
        foreach (var neighbour in _neighbours)
            _signer.Count(neighbour, BytesPerSecond, Price);
        _signerTime.Advance(TimeSpan.FromSeconds(1));
    }

    [GlobalSetup(Target = nameof(BookNeighbourSecond))]
    public void SetupBook()
    {
        Setup();
        // 30 seconds of receipts from 1,000 neighbours: 30,000 signatures, about 7 s of setup.
        _payers = [.. Enumerable.Range(0, Neighbours).Select(_ => NodeKey.Generate())];
        _incoming = new byte[Rounds][][];
        for (var round = 0; round < Rounds; round++)
        {
            _incoming[round] = new byte[Neighbours][];
            for (var i = 0; i < Neighbours; i++)
            {
                var bytes = BytesPerSecond * (round + 1);
                _incoming[round][i] = Receipt.Create(_payers[i], _key.Address, (ulong)round + 1, bytes, Receipt.AmountFor(bytes, Price), Start.AddSeconds(round)).Bytes;
            }
        }
        NewBook();
    }

    [Benchmark]
    public byte Sign()
    {
        _key.Sign(Receipt.SignaturePurpose, _message, _signature);
        return _signature[0];
    }

    [Benchmark]
    public bool Verify() => _key.Address.Verify(Receipt.SignaturePurpose, _message, _signature);

    /// <summary>Building and signing one receipt.</summary>
    [Benchmark]
    public int CreateAndSign() => Receipt.Create(_key, _payee.Address, ++_sequence, 1_000_000, 10, Start).Bytes.Length;

    /// <summary>Parsing one receipt off the wire (both addresses point-checked) and checking its signature.</summary>
    [Benchmark]
    public bool ParseAndVerify() => Receipt.TryParse(_receipt.Bytes, out var parsed) == ReceiptError.None && parsed!.Verify();

    /// <summary>One neighbour-second on the payer's side: count what it was handed, sign the receipt now due.</summary>
    [Benchmark]
    public ulong SignerNeighbourSecond()
    {
        // 1 ms of virtual time per operation: each of the 1,000 neighbours comes round once a second.
        _signerTime.Advance(TimeSpan.FromMilliseconds(1));
        var neighbour = _neighbours[_next];
        _next = (_next + 1) % Neighbours;
        var receipt = _signer.Poll(neighbour) ?? throw new InvalidOperationException("No receipt was due.");
        _signer.Count(neighbour, BytesPerSecond, Price);
        return receipt.Sequence;
    }

    /// <summary>One neighbour-second on the payee's side: count what it forwarded, check and keep the receipt that arrives.</summary>
    [Benchmark]
    public ReceiptError BookNeighbourSecond()
    {
        if (_offered == Rounds * Neighbours)
            NewBook();
        var round = _offered / Neighbours;
        var i = _offered % Neighbours;
        _offered++;
        _bookTime.Advance(TimeSpan.FromMilliseconds(1));
        _book.Count(_payers[i].Address, BytesPerSecond, Price);
        var error = _book.Offer(_incoming[round][i]);
        return error == ReceiptError.None ? error : throw new InvalidOperationException($"A receipt was refused: {error}.");
    }

    // Once the pre-signed receipts run out (about every 30,000 operations), a fresh book takes them again from the start.
    private void NewBook()
    {
        _bookTime = new FakeTimeProvider(Start);
        _book = new ReceiptBook(_key.Address, _bookTime);
        foreach (var payer in _payers)
            _book.AddNeighbour(payer.Address);
        _offered = 0;
    }

    [GlobalCleanup]
    public void Dispose()
    {
        _key?.Dispose();
        _payee?.Dispose();
        foreach (var payer in _payers)
            payer.Dispose();
        GC.SuppressFinalize(this);
    }
}
