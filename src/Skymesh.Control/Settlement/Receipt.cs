using System.Buffers.Binary;
using Skymesh.Identity;

namespace Skymesh.Control.Settlement;

/// <summary>Why a receipt was refused (docs/control-plane.md, "Settlement").</summary>
public enum ReceiptError
{
    None,

    /// <summary>Not a well-formed record: length, magic, a payer paying itself, a sequence of 0, a value over 2^63 − 1, an impossible time.</summary>
    Malformed,

    /// <summary>Addressed to another payee than this node.</summary>
    WrongPayee,

    /// <summary>From a node this book forwards nothing for (not a neighbour it counts).</summary>
    UnknownPayer,

    /// <summary>Issued later than now + the clock tolerance.</summary>
    FromTheFuture,

    /// <summary>Issued longer ago than the book's maximum age.</summary>
    TooOld,

    /// <summary>The same sequence number as the receipt already accepted from this payer.</summary>
    Replayed,

    /// <summary>A lower sequence number than the receipt already accepted.</summary>
    Stale,

    /// <summary>A higher sequence number, but fewer bytes or a smaller amount than the receipt already accepted.</summary>
    NonMonotonic,

    /// <summary>Arrived sooner after the payer's previous receipt than the book's minimum interval (its signature was not checked).</summary>
    TooFrequent,

    /// <summary>The signature does not verify against the payer — checked last, after every cheap check.</summary>
    BadSignature,
}

/// <summary>
/// A payer's signed, cumulative acknowledgement of what a neighbour has forwarded for it (docs/control-plane.md,
/// "Settlement"). The binary layout is canonical — what is signed is exactly what is sent — and every field is fixed
/// size, so a receipt is always <see cref="Length"/> bytes:
/// <code>
/// "SKR1" | payer(32) | payee(32) | sequence(8) | bytes(8) | amount(8) | issued ms(8)
///        | BIP340 signature(64) by payer, purpose "settlement-receipt", over everything before it
/// </code>
/// Bytes and amount are totals since the pair began, so a later receipt supersedes every earlier one and a lost one
/// costs nothing.
/// </summary>
public sealed class Receipt
{
    public const string SignaturePurpose = "settlement-receipt";

    /// <summary>The whole record, signature included.</summary>
    public const int Length = SignedLength + NodeKey.SignatureLength;

    /// <summary>One MiB, the unit prices are quoted in.</summary>
    public const long BytesPerMiB = 1 << Meter.MiBShift;

    private const int SignedLength = 4 + 32 + 32 + 8 + 8 + 8 + 8;
    private const int PayerOffset = 4;
    private const int PayeeOffset = 36;
    private const int SequenceOffset = 68;
    private const int BytesOffset = 76;
    private const int AmountOffset = 84;
    private const int IssuedOffset = 92;
    private const long MaxUnixMilliseconds = 253_402_300_799_999;
    private static ReadOnlySpan<byte> Magic => "SKR1"u8;

    private Receipt(NodeAddress payer, NodeAddress payee, ulong sequence, long forwardedBytes, long amount, DateTimeOffset issued, byte[] bytes)
    {
        Payer = payer;
        Payee = payee;
        Sequence = sequence;
        ForwardedBytes = forwardedBytes;
        Amount = amount;
        Issued = issued;
        Bytes = bytes;
    }

    /// <summary>The neighbour whose traffic was forwarded: it owes, and it signs.</summary>
    public NodeAddress Payer { get; }

    /// <summary>The node that forwarded the traffic and is owed.</summary>
    public NodeAddress Payee { get; }

    /// <summary>Strictly increasing per payer → payee pair, from 1.</summary>
    public ulong Sequence { get; }

    /// <summary>All bytes the payee has forwarded for the payer since the pair began, by the payer's count.</summary>
    public long ForwardedBytes { get; }

    /// <summary>
    /// All the payer owes the payee for them, in micro-units of the settlement coin: Σ bytes × the payee's price per MiB
    /// at the time, divided by 1,048,576 and rounded down once, on the total (<see cref="AmountFor"/>).
    /// </summary>
    public long Amount { get; }

    /// <summary>When the payer signed it (millisecond precision).</summary>
    public DateTimeOffset Issued { get; }

    /// <summary>The signed record as it travels.</summary>
    public byte[] Bytes { get; }

    /// <summary>What <paramref name="bytes"/> cost at one price: bytes × price per MiB / 1,048,576, rounded down.</summary>
    public static long AmountFor(long bytes, uint pricePerMiB)
    {
        var meter = default(Meter);
        meter.Add(bytes, pricePerMiB);
        return meter.Amount;
    }

    /// <summary>Builds and signs a receipt (about 0.2 ms: one signature).</summary>
    public static Receipt Create(NodeKey payer, NodeAddress payee, ulong sequence, long forwardedBytes, long amount, DateTimeOffset issued)
    {
        ArgumentNullException.ThrowIfNull(payer);
        if (payee.IsEmpty || payee == payer.Address)
            throw new ArgumentException("A receipt is paid to another node than its payer.", nameof(payee));
        ArgumentOutOfRangeException.ThrowIfZero(sequence);
        ArgumentOutOfRangeException.ThrowIfNegative(forwardedBytes);
        ArgumentOutOfRangeException.ThrowIfNegative(amount);
        var issuedMs = issued.ToUnixTimeMilliseconds();
        if (issuedMs is < 0 or > MaxUnixMilliseconds)
            throw new ArgumentOutOfRangeException(nameof(issued), issued, "A receipt is issued after 1970.");
        var bytes = new byte[Length];
        var span = bytes.AsSpan();
        Magic.CopyTo(span);
        payer.Address.WriteTo(span[PayerOffset..]);
        payee.WriteTo(span[PayeeOffset..]);
        BinaryPrimitives.WriteUInt64BigEndian(span[SequenceOffset..], sequence);
        BinaryPrimitives.WriteInt64BigEndian(span[BytesOffset..], forwardedBytes);
        BinaryPrimitives.WriteInt64BigEndian(span[AmountOffset..], amount);
        BinaryPrimitives.WriteInt64BigEndian(span[IssuedOffset..], issuedMs);
        payer.Sign(SignaturePurpose, span[..SignedLength], span[SignedLength..]);
        return new Receipt(payer.Address, payee, sequence, forwardedBytes, amount, DateTimeOffset.FromUnixTimeMilliseconds(issuedMs), bytes);
    }

    /// <summary>
    /// Reads a receipt's fields without checking its signature (that is <see cref="Verify"/>, the expensive part, done
    /// after the cheap checks). Checks that both addresses are curve points (13 µs each); <see cref="ReceiptBook"/>
    /// matches them against the nodes it knows instead.
    /// </summary>
    public static ReceiptError TryParse(ReadOnlySpan<byte> bytes, out Receipt? receipt)
    {
        receipt = null;
        if (!HasForm(bytes)
            || !NodeAddress.TryFromBytes(bytes.Slice(PayerOffset, NodeAddress.Length), out var payer)
            || !NodeAddress.TryFromBytes(bytes.Slice(PayeeOffset, NodeAddress.Length), out var payee)
            || payer == payee)
            return ReceiptError.Malformed;
        return TryParseFields(bytes, payer, payee, out receipt);
    }

    /// <summary>Checks the payer's signature (about 0.23 ms).</summary>
    public bool Verify() => Payer.Verify(SignaturePurpose, Bytes.AsSpan(0, SignedLength), Bytes.AsSpan(SignedLength));

    internal bool Verify(NodeVerifier payer) =>
        payer.Address == Payer && payer.Verify(SignaturePurpose, Bytes.AsSpan(0, SignedLength), Bytes.AsSpan(SignedLength));

    internal static bool HasForm(ReadOnlySpan<byte> bytes) => bytes.Length == Length && bytes.StartsWith(Magic);

    internal static ReadOnlySpan<byte> PayerField(ReadOnlySpan<byte> bytes) => bytes.Slice(PayerOffset, NodeAddress.Length);

    internal static ReadOnlySpan<byte> PayeeField(ReadOnlySpan<byte> bytes) => bytes.Slice(PayeeOffset, NodeAddress.Length);

    /// <summary>The rest of <see cref="TryParse"/>, for a caller that has matched the two address fields to these addresses.</summary>
    internal static ReceiptError TryParseFields(ReadOnlySpan<byte> bytes, NodeAddress payer, NodeAddress payee, out Receipt? receipt)
    {
        receipt = null;
        var sequence = BinaryPrimitives.ReadUInt64BigEndian(bytes[SequenceOffset..]);
        var forwarded = BinaryPrimitives.ReadInt64BigEndian(bytes[BytesOffset..]);
        var amount = BinaryPrimitives.ReadInt64BigEndian(bytes[AmountOffset..]);
        var issuedMs = BinaryPrimitives.ReadInt64BigEndian(bytes[IssuedOffset..]);
        if (sequence == 0 || forwarded < 0 || amount < 0 || issuedMs is < 0 or > MaxUnixMilliseconds)
            return ReceiptError.Malformed;
        receipt = new Receipt(payer, payee, sequence, forwarded, amount, DateTimeOffset.FromUnixTimeMilliseconds(issuedMs), bytes.ToArray());
        return ReceiptError.None;
    }

    public override string ToString() => $"receipt {Payer}→{Payee} #{Sequence}: {ForwardedBytes} B, {Amount} µ";
}
