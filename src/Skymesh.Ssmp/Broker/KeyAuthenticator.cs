using System.Buffers.Binary;
using System.Security.Cryptography;
using Microsoft.Extensions.Logging;
using Skymesh.Identity;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Ssmp.Broker;

/// <summary>
/// <c>key</c> (a Skymesh extension, spec §7): the id is a node address and the credential a fresh timestamp signed by
/// that node's key for this broker (<see cref="SsmpKeyCredential"/>). The window, the server name and the replay set
/// are the broker's (<see cref="SsmpBrokerOptions.ServerName"/>, <see cref="SsmpBrokerOptions.KeyLoginWindow"/>,
/// <see cref="SsmpBrokerOptions.KeyLoginReplayCapacity"/>); refusals are counted in the broker's metrics by reason.
/// The anonymous id is refused: it names no key to check.
/// </summary>
public sealed class KeyAuthenticator : ISsmpAuthenticator
{
    public string Scheme => SsmpKeyCredential.Scheme;

    public int Assurance => 2;

    public bool Authenticate(SsmpLoginContext context, ReadOnlySpan<byte> credential)
    {
        var guard = context.KeyLogin;
        if (guard is null)
        {
            context.RefusalReason = "key: the scheme works only inside a broker";
            return false;
        }
        if (guard.Check(context.Id, context.CredentialIsBinary, credential) is not { } failure)
            return true;
        context.RefusalReason = Describe(failure);
        context.Busy = failure == KeyLoginFailure.ReplaySetFull;
        return false;
    }

    private static string Describe(KeyLoginFailure failure) => failure switch
    {
        KeyLoginFailure.Malformed => "key: the credential is not a 72-byte binary payload",
        KeyLoginFailure.Anonymous => "key: the anonymous id names no key",
        KeyLoginFailure.BadId => "key: the id is not a node address",
        KeyLoginFailure.TooOld => "key: the timestamp is older than the window",
        KeyLoginFailure.TooNew => "key: the timestamp is further ahead than the window",
        KeyLoginFailure.Replayed => "key: this credential was already used",
        KeyLoginFailure.ReplaySetFull => "key: too many recent key logins to remember another; closed without an answer",
        KeyLoginFailure.BadSignature => "key: the signature does not verify",
        _ => "key: refused",
    };
}

/// <summary>
/// One broker's checks for the <c>key</c> scheme: the cheap ones first (length, id syntax, timestamp window, replay
/// set), the signature (~0.23 ms) last. Accepted credentials are remembered until their timestamp leaves the window,
/// in a set that never holds more than its capacity: when it is full, new key logins are refused until entries
/// expire, rather than forgetting one that could then be replayed.
/// </summary>
internal sealed partial class KeyLoginGuard
{
    private readonly object _sync = new();

    // A 128-bit digest of (id, timestamp, signature) → when it may be forgotten (Unix ms): the timestamp plus the window.
    private readonly Dictionary<UInt128, long> _seen = [];
    private readonly PriorityQueue<UInt128, long> _expiries = new();
    private readonly long[] _failures = new long[Enum.GetValues<KeyLoginFailure>().Length];
    private readonly string _serverName;
    private readonly long _windowMs;
    private readonly int _capacity;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private long _accepted;
    private bool _fullReported;

    public KeyLoginGuard(string serverName, TimeSpan window, int capacity, TimeProvider time, ILogger logger)
    {
        _serverName = serverName;
        _windowMs = (long)window.TotalMilliseconds;
        _capacity = capacity;
        _time = time;
        _logger = logger;
    }

    public long Accepted => Interlocked.Read(ref _accepted);

    public int Remembered
    {
        get
        {
            lock (_sync)
                return _seen.Count;
        }
    }

    public long FailuresFor(KeyLoginFailure reason) => Interlocked.Read(ref _failures[(int)reason]);

    /// <summary>Null when the login is accepted (and its credential now remembered); otherwise why it is refused.</summary>
    public KeyLoginFailure? Check(string id, bool binary, ReadOnlySpan<byte> credential)
    {
        var failure = CheckCore(id, binary, credential);
        if (failure is { } f)
            Interlocked.Increment(ref _failures[(int)f]);
        else
            Interlocked.Increment(ref _accepted);
        return failure;
    }

    /// <summary>Forgets credentials whose timestamps have left the window; the broker's sweep calls it.</summary>
    public void Sweep()
    {
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        lock (_sync)
        {
            EvictExpired(now);
            if (_seen.Count == 0)
            {
                // Give back what a burst of logins made the set grow to.
                _seen.TrimExcess();
                _expiries.TrimExcess();
            }
        }
    }

    private KeyLoginFailure? CheckCore(string id, bool binary, ReadOnlySpan<byte> credential)
    {
        if (id == ".")
            return KeyLoginFailure.Anonymous;
        if (!binary || credential.Length != SsmpKeyCredential.Length)
            return KeyLoginFailure.Malformed;
        if (!IsLowercaseHexAddress(id))
            return KeyLoginFailure.BadId;

        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var timestamp = SsmpKeyCredential.ReadTimestamp(credential);
        if (timestamp < now - _windowMs)
            return KeyLoginFailure.TooOld;
        if (timestamp > now + _windowMs)
            return KeyLoginFailure.TooNew;

        var key = ReplayKey(id, credential);
        lock (_sync)
        {
            EvictExpired(now);
            if (_seen.ContainsKey(key))
                return KeyLoginFailure.Replayed;
            if (_seen.Count >= _capacity)
                return Full();
            _fullReported = false;
        }

        // The expensive part, outside the lock: the point check of the address, then the signature.
        if (!NodeAddress.TryParse(id, out var address))
            return KeyLoginFailure.BadId;
        Span<byte> message = stackalloc byte[SsmpKeyCredential.MaxMessageLength];
        var length = SsmpKeyCredential.WriteMessage(_serverName, id, timestamp, message);
        if (!address.Verify(SsmpKeyCredential.SignaturePurpose, message[..length], credential[SsmpKeyCredential.TimestampLength..]))
            return KeyLoginFailure.BadSignature;

        lock (_sync)
        {
            // Two connections may have presented the same credential at once: only the first one in is accepted.
            if (_seen.ContainsKey(key))
                return KeyLoginFailure.Replayed;
            if (_seen.Count >= _capacity)
                return Full();
            var expiry = timestamp + _windowMs;
            _seen.Add(key, expiry);
            _expiries.Enqueue(key, expiry);
        }
        return null;
    }

    /// <summary>Called under the lock. Warns once each time the set fills up, not once per refused login.</summary>
    private KeyLoginFailure Full()
    {
        if (!_fullReported)
        {
            _fullReported = true;
            Log.ReplaySetFull(_logger, _capacity);
        }
        return KeyLoginFailure.ReplaySetFull;
    }

    /// <summary>Called under the lock. An entry is kept while its timestamp is still inside the window (expiry ≥ now).</summary>
    private void EvictExpired(long now)
    {
        while (_expiries.TryPeek(out var key, out var expiry) && expiry < now)
        {
            _expiries.Dequeue();
            _seen.Remove(key);
        }
    }

    /// <summary>
    /// 128 bits of SHA-256 over the id and the whole credential: the same credential always maps to the same key,
    /// two different ones collide with probability 2⁻¹²⁸, and each entry stays small (about 70 bytes with its expiry).
    /// </summary>
    private static UInt128 ReplayKey(string id, ReadOnlySpan<byte> credential)
    {
        Span<byte> input = stackalloc byte[NodeAddress.TextLength + SsmpKeyCredential.Length];
        System.Text.Encoding.ASCII.GetBytes(id, input);
        credential.CopyTo(input[NodeAddress.TextLength..]);
        Span<byte> digest = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(input, digest);
        return BinaryPrimitives.ReadUInt128LittleEndian(digest);
    }

    /// <summary>Exactly 64 characters from 0-9 and a-f: the canonical text of an address, the only one it is reachable at.</summary>
    private static bool IsLowercaseHexAddress(string id)
    {
        if (id.Length != NodeAddress.TextLength)
            return false;
        foreach (var c in id)
        {
            if (c is not ((>= '0' and <= '9') or (>= 'a' and <= 'f')))
                return false;
        }
        return true;
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 20, Level = LogLevel.Warning,
            Message = "Key logins: {Capacity} recent credentials remembered, the most allowed; further key logins are refused until some expire")]
        public static partial void ReplaySetFull(ILogger logger, int capacity);
    }
}
