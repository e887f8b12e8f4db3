using System.Buffers.Binary;
using System.Security.Cryptography;

namespace Skymesh.Mesh.Paths;

/// <summary>
/// End-to-end encryption of path messages between source and destination, so transit nodes carry only
/// ciphertext. ChaCha20-Poly1305 (RFC 8439), one 32-byte key per direction. A sealed payload is
/// <c>counter(8) ciphertext tag(16)</c>; the nonce is the ASCII bytes <c>path</c> then the counter, and the
/// message type is the associated data. The counter counts messages sealed in this direction, so every
/// message — a retransmission too, which is sealed afresh — gets a nonce never used before with the key.
/// Instances are safe to use from several threads.
/// </summary>
public sealed class PathCipher : IDisposable
{
    /// <summary>Bytes a sealed payload has beyond its plaintext.</summary>
    public const int Overhead = CounterLength + TagLength;

    public const int KeyLength = 32;

    private const int CounterLength = 8;
    private const int TagLength = 16;

    // "path": keeps these nonces apart from the link layer's (4 zero bytes, then the frame sequence) even if
    // a key were ever shared by mistake.
    private const uint NoncePrefix = 0x70617468;

    private readonly ChaCha20Poly1305 _seal;
    private readonly ChaCha20Poly1305 _open;
    private readonly Lock _sealLock = new();
    private readonly Lock _openLock = new();
    private ulong _counter;
    private readonly CounterWindow _replay = new();
    private long _replays;

    /// <summary>Sealed messages refused because their counter was seen before (or is too old to tell).</summary>
    public long Replays => Interlocked.Read(ref _replays);

    public PathCipher(ReadOnlySpan<byte> sendKey, ReadOnlySpan<byte> receiveKey)
    {
        if (sendKey.Length != KeyLength || receiveKey.Length != KeyLength)
            throw new ArgumentException($"A path key is {KeyLength} bytes.");
        if (!ChaCha20Poly1305.IsSupported)
            throw new PlatformNotSupportedException("ChaCha20-Poly1305 is not available on this platform.");
        _seal = new ChaCha20Poly1305(sendKey);
        _open = new ChaCha20Poly1305(receiveKey);
    }

    /// <summary>Messages sealed so far: the next counter.</summary>
    public ulong Sealed
    {
        get
        {
            lock (_sealLock)
                return _counter;
        }
    }

    /// <summary>Seals <paramref name="plaintext"/> into <paramref name="destination"/> (at least <see cref="Overhead"/> bytes longer); returns the length written.</summary>
    public int Seal(byte type, ReadOnlySpan<byte> plaintext, Span<byte> destination)
    {
        var length = plaintext.Length + Overhead;
        if (destination.Length < length)
            throw new ArgumentException("The destination is too small for the sealed message.", nameof(destination));
        Span<byte> nonce = stackalloc byte[12];
        ReadOnlySpan<byte> associated = [type];
        lock (_sealLock)
        {
            var counter = _counter++;
            BinaryPrimitives.WriteUInt64BigEndian(destination, counter);
            Nonce(counter, nonce);
            _seal.Encrypt(nonce, plaintext, destination.Slice(CounterLength, plaintext.Length), destination.Slice(CounterLength + plaintext.Length, TagLength), associated);
        }
        return length;
    }

    /// <summary>
    /// Opens a sealed payload into <paramref name="plaintext"/>; false when it is too short, was altered, or was
    /// sealed with another key or for another message type.
    /// </summary>
    public bool TryOpen(byte type, ReadOnlySpan<byte> sealedPayload, Span<byte> plaintext, out int written)
    {
        written = 0;
        if (sealedPayload.Length < Overhead || plaintext.Length < sealedPayload.Length - Overhead)
            return false;
        var length = sealedPayload.Length - Overhead;
        Span<byte> nonce = stackalloc byte[12];
        Nonce(BinaryPrimitives.ReadUInt64BigEndian(sealedPayload), nonce);
        ReadOnlySpan<byte> associated = [type];
        var counter = BinaryPrimitives.ReadUInt64BigEndian(sealedPayload);
        try
        {
            lock (_openLock)
            {
                // A copy of a message already opened (replayed on the way, or duplicated) is refused: otherwise a
                // recorded keepalive could keep a dead path looking alive. Retransmissions are sealed afresh, so
                // a genuine message never reuses a counter.
                if (!_replay.IsNew(counter))
                {
                    Interlocked.Increment(ref _replays);
                    return false;
                }
                _open.Decrypt(nonce, sealedPayload.Slice(CounterLength, length), sealedPayload[^TagLength..], plaintext[..length], associated);
                _replay.Accept(counter);
            }
        }
        catch (AuthenticationTagMismatchException)
        {
            return false;
        }
        written = length;
        return true;
    }

    private static void Nonce(ulong counter, Span<byte> nonce)
    {
        BinaryPrimitives.WriteUInt32BigEndian(nonce, NoncePrefix);
        BinaryPrimitives.WriteUInt64BigEndian(nonce[4..], counter);
    }

    /// <summary>Frees the native cipher contexts, after any seal or open under way on another thread has finished.</summary>
    public void Dispose()
    {
        lock (_sealLock)
            _seal.Dispose();
        lock (_openLock)
            _open.Dispose();
    }
}

/// <summary>
/// Which message counters have been opened: the highest, and a bitmap of the <see cref="Size"/> before it. A
/// counter older than that is refused as if replayed — harmless, since a retransmission gets a new counter.
/// </summary>
internal sealed class CounterWindow
{
    public const int Size = 4096;
    private readonly ulong[] _bits = new ulong[Size / 64];
    private ulong _highest;
    private bool _any;

    public bool IsNew(ulong counter)
    {
        if (!_any || counter > _highest)
            return true;
        var age = _highest - counter;
        return age < Size && (_bits[(int)(counter / 64 % (Size / 64))] & (1UL << (int)(counter % 64))) == 0;
    }

    public void Accept(ulong counter)
    {
        if (!_any || counter > _highest)
        {
            // The slots of the counters the window slides over held counters a whole window older: clear them.
            if (!_any || counter - _highest >= Size)
            {
                Array.Clear(_bits);
            }
            else
            {
                for (var c = _highest + 1; c <= counter; c++)
                    _bits[(int)(c / 64 % (Size / 64))] &= ~(1UL << (int)(c % 64));
            }
            _highest = counter;
            _any = true;
        }
        _bits[(int)(counter / 64 % (Size / 64))] |= 1UL << (int)(counter % 64);
    }
}
