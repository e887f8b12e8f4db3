using System.Net;
using System.Threading.Channels;
using Skymesh.Identity;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Links;

/// <summary>Limits on how much a stranger's Hellos may cost a node (docs/wire-format.md, "Handshake admission").</summary>
public sealed class HandshakeLimits
{
    /// <summary>Hellos taken per second from one IP address (a token bucket; <see cref="BurstPerAddress"/> at once).</summary>
    public double HellosPerSecondPerAddress { get; set; } = 20;

    public int BurstPerAddress { get; set; } = 20;

    /// <summary>Hellos taken per second from everyone together, whatever their addresses claim.</summary>
    public double HellosPerSecond { get; set; } = 500;

    /// <summary>Hellos waiting for the handshake worker; more are dropped.</summary>
    public int Queue { get; set; } = 128;

    /// <summary>Links we answered that have not finished their handshake, from one IP address and in all.</summary>
    public int HalfOpenPerAddress { get; set; } = 16;

    public int HalfOpen { get; set; } = 1024;

    /// <summary>
    /// Under load — once strangers' Hellos have used half of <see cref="HellosPerSecond"/> — a Hello without a valid
    /// cookie is answered with a cookie for its source address instead of being handled, and only Hellos that come
    /// back with it go on. Off, Hellos over the global rate are simply dropped.
    /// </summary>
    public bool Cookies { get; set; } = true;

    /// <summary>How long a cookie secret is used; cookies made with the one before stay valid as long again.</summary>
    public TimeSpan CookieSecretLifetime { get; set; } = TimeSpan.FromMinutes(2);

    public void Validate()
    {
        if (!(HellosPerSecondPerAddress > 0) || !(HellosPerSecond > 0) || BurstPerAddress < 1 || Queue < 1 || HalfOpenPerAddress < 1 || HalfOpen < HalfOpenPerAddress
            || CookieSecretLifetime <= TimeSpan.Zero)
            throw new ArgumentException("Handshake limits must be positive, and HalfOpen at least HalfOpenPerAddress.");
    }
}

/// <summary>
/// Admission of Hellos from nodes we have no link with. Anyone can make a valid Hello with a key of their own, and a
/// forged one costs nothing to send; answering one costs a signature check, a key, an ECDH and a signature. So the
/// receive loop (which every link's traffic shares) only does cheap checks — shape, a rate per source address and in
/// all, a bounded queue — and hands the Hello to one handshake worker, which checks the clock and the signature before
/// anything is kept: a forged Hello leaves no state and takes no link id. Links that are answered but never finish are
/// capped per address and in all, and time out; their ids are used again.
/// <para>
/// Under load the node also asks each source to prove its address before its Hello costs anything (a cookie round, as
/// WireGuard does): a Hello without a valid cookie gets a Cookie message — an HMAC of its source address under a
/// secret that rotates — and only a Hello that comes back with that cookie is queued, ahead of the others. A flood
/// whose source addresses are forged never sees its cookies, so it cannot crowd out a real neighbour.
/// </para>
/// </summary>
public sealed partial class MeshSwitch
{
    private readonly Dictionary<IPAddress, Bucket> _buckets = [];
    private readonly Lock _admission = new();
    private Bucket _allHellos;
    private Channel<(IMeshInterface Nic, EndPoint Remote, byte[] Frame)>? _hellos;
    private readonly System.Collections.Concurrent.ConcurrentQueue<(IMeshInterface Nic, EndPoint Remote, byte[] Frame)> _provenHellos = new();
    private int _provenCount;
    private Task _handshakeWorker = Task.CompletedTask;
    private long _hellosRateLimited, _hellosQueueFull, _hellosForged, _hellosHalfOpenCapped, _cookiesSent;
    private byte[]? _cookieSecret, _previousCookieSecret;
    private long _cookieSecretBorn;

    /// <summary>Hellos dropped, by reason: over the rate limits, queue full, forged or stale (checked by the worker), half-open caps reached.</summary>
    public (long RateLimited, long QueueFull, long Refused, long HalfOpenCapped) HelloDrops =>
        (Interlocked.Read(ref _hellosRateLimited), Interlocked.Read(ref _hellosQueueFull), Interlocked.Read(ref _hellosForged), Interlocked.Read(ref _hellosHalfOpenCapped));

    /// <summary>Hellos answered with a cookie instead of being handled, because the node was under load.</summary>
    public long CookiesSent => Interlocked.Read(ref _cookiesSent);

    /// <summary>Links answered that have not finished their handshake.</summary>
    public int HalfOpen => _byId.Values.Count(l => l.State == LinkState.Handshaking && !l.IsInitiator);

    private struct Bucket
    {
        public double Tokens;
        public long Updated;
    }

    /// <summary>On the receive loop: a Hello from a stranger passes the cheap checks and waits for the worker, or is dropped (counted).</summary>
    private void AdmitHello(IMeshInterface nic, EndPoint remote, ReadOnlySpan<byte> frame, long now)
    {
        var limits = Options.Handshakes;
        var address = (remote as IPEndPoint)?.Address;
        var message = frame[(MeshWire.FrameHeaderLength + MeshWire.MessageHeaderLength)..];
        if (!LinkHandshake.TrySplitHello(message, out var hello, out var cookie))
            return;
        bool proven;
        byte[]? cookieReply = null;
        lock (_admission)
        {
            // Per address first: one source cannot use up everyone's share, nor make us send it cookies without end.
            if (address is not null)
            {
                if (_buckets.Count >= 4096)
                    ForgetFullBuckets(limits, now);
                ref var bucket = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_buckets, address, out var existed);
                if (!existed)
                    bucket = new Bucket { Tokens = limits.BurstPerAddress, Updated = now };
                if (!Take(ref bucket, limits.HellosPerSecondPerAddress, limits.BurstPerAddress, now))
                {
                    Interlocked.Increment(ref _hellosRateLimited);
                    return;
                }
            }
            proven = limits.Cookies && cookie.Length == LinkHandshake.CookieLength && CookieIsValid(remote, cookie, now);
            if (!proven)
            {
                // Every unproven Hello counts against the global rate, so a flood keeps the node under load for as long
                // as it lasts; under load (half the rate used) the Hello gets a cookie instead of a place in the queue.
                var taken = Take(ref _allHellos, limits.HellosPerSecond, limits.HellosPerSecond, now);
                if (limits.Cookies && (!taken || _allHellos.Tokens < limits.HellosPerSecond / 2))
                {
                    cookieReply = CookieFor(remote, hello, now);
                }
                else if (!taken)
                {
                    Interlocked.Increment(ref _hellosRateLimited);
                    return;
                }
            }
            if (_hellos is null)
            {
                _hellos = Channel.CreateBounded<(IMeshInterface, EndPoint, byte[])>(new BoundedChannelOptions(limits.Queue)
                {
                    SingleReader = true,
                    FullMode = BoundedChannelFullMode.DropWrite,
                });
                _handshakeWorker = Background.Run(HandshakeWorkerAsync);
            }
        }
        if (cookieReply is not null)
        {
            // Sent outside the lock: the secret was the only thing it needed from under it.
            var builder = new FrameBuilder(Math.Max(MeshWire.MinMtu, nic.Mtu));
            builder.TryAdd(MeshWire.ControlLabel, LinkMessageType.Cookie, cookieReply, encrypted: false);
            nic.TrySend(remote, builder.Seal(0, null));
            Interlocked.Increment(ref _cookiesSent);
            return;
        }
        if (proven)
        {
            // Ahead of the queue; an empty entry on the channel wakes the worker (when the channel is full, the worker
            // is busy anyway and takes proven Hellos first).
            if (Interlocked.Increment(ref _provenCount) > limits.Queue)
            {
                Interlocked.Decrement(ref _provenCount);
                Interlocked.Increment(ref _hellosQueueFull);
                return;
            }
            _provenHellos.Enqueue((nic, remote, frame.ToArray()));
            _hellos.Writer.TryWrite(default);
        }
        else if (!_hellos.Writer.TryWrite((nic, remote, frame.ToArray())))
        {
            Interlocked.Increment(ref _hellosQueueFull);
        }
    }

    /// <summary>The Cookie message answering a Hello from <paramref name="remote"/> (under <see cref="_admission"/>).</summary>
    private byte[] CookieFor(EndPoint remote, ReadOnlySpan<byte> hello, long now)
    {
        Span<byte> cookie = stackalloc byte[LinkHandshake.CookieLength];
        MakeCookie(CurrentCookieSecret(now), remote, cookie);
        return LinkHandshake.WriteCookie(hello, cookie);
    }

    private bool CookieIsValid(EndPoint remote, ReadOnlySpan<byte> cookie, long now)
    {
        Span<byte> expected = stackalloc byte[LinkHandshake.CookieLength];
        MakeCookie(CurrentCookieSecret(now), remote, expected);
        if (System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(cookie, expected))
            return true;
        if (_previousCookieSecret is null)
            return false;
        MakeCookie(_previousCookieSecret, remote, expected);
        return System.Security.Cryptography.CryptographicOperations.FixedTimeEquals(cookie, expected);
    }

    /// <summary>The secret cookies are made with now, rotated every <see cref="HandshakeLimits.CookieSecretLifetime"/> (under <see cref="_admission"/>).</summary>
    private byte[] CurrentCookieSecret(long now)
    {
        if (_cookieSecret is null || Time.GetElapsedTime(_cookieSecretBorn, now) >= Options.Handshakes.CookieSecretLifetime)
        {
            _previousCookieSecret = _cookieSecret;
            _cookieSecret = System.Security.Cryptography.RandomNumberGenerator.GetBytes(32);
            _cookieSecretBorn = now;
        }
        return _cookieSecret;
    }

    /// <summary>HMAC-SHA256 of the source address and port under <paramref name="secret"/>, cut to a cookie's length.</summary>
    private static void MakeCookie(byte[] secret, EndPoint remote, Span<byte> cookie)
    {
        Span<byte> source = stackalloc byte[64];
        int length;
        if (remote is IPEndPoint ip)
        {
            ip.Address.MapToIPv6().TryWriteBytes(source, out _);
            System.Buffers.Binary.BinaryPrimitives.WriteUInt16BigEndian(source[16..], (ushort)ip.Port);
            length = 18;
        }
        else
        {
            // Other interfaces (in-memory ones) name their end points in a few characters.
            var text = remote.ToString() ?? "";
            length = System.Text.Encoding.UTF8.GetBytes(text.AsSpan(0, Math.Min(text.Length, 16)), source);
        }
        Span<byte> mac = stackalloc byte[32];
        System.Security.Cryptography.HMACSHA256.HashData(secret, source[..length], mac);
        mac[..cookie.Length].CopyTo(cookie);
    }

    private bool Take(ref Bucket bucket, double perSecond, double burst, long now)
    {
        // A bucket never used starts full.
        bucket.Tokens = bucket.Updated == 0 ? burst : Math.Min(burst, bucket.Tokens + Time.GetElapsedTime(bucket.Updated, now).TotalSeconds * perSecond);
        bucket.Updated = now;
        if (bucket.Tokens < 1)
            return false;
        bucket.Tokens -= 1;
        return true;
    }

    /// <summary>Forgets the addresses whose buckets have filled up again (they cost nothing to remember anew).</summary>
    private void ForgetFullBuckets(HandshakeLimits limits, long now)
    {
        List<IPAddress> full = [];
        foreach (var (address, bucket) in _buckets)
        {
            if (bucket.Tokens + Time.GetElapsedTime(bucket.Updated, now).TotalSeconds * limits.HellosPerSecondPerAddress >= limits.BurstPerAddress)
                full.Add(address);
        }
        foreach (var address in full)
            _buckets.Remove(address);
        // Still full of addresses that are all sending: start over rather than grow.
        if (_buckets.Count >= 4096)
            _buckets.Clear();
    }

    /// <summary>
    /// The handshake worker: the expensive checks and the answer, one Hello at a time, off the receive loops. Hellos
    /// that came back with a valid cookie go first.
    /// </summary>
    private async Task HandshakeWorkerAsync()
    {
        var reader = _hellos!.Reader;
        try
        {
            while (await reader.WaitToReadAsync())
            {
                while (true)
                {
                    if (_provenHellos.TryDequeue(out var hello))
                        Interlocked.Decrement(ref _provenCount);
                    else if (!reader.TryRead(out hello))
                        break;
                    // An empty entry only woke the worker.
                    if (hello.Frame is not null)
                        Answer(hello.Nic, hello.Remote, hello.Frame);
                }
            }
        }
        catch (Exception e) when (e is ObjectDisposedException or ChannelClosedException)
        {
        }
    }

    private void Answer(IMeshInterface nic, EndPoint remote, byte[] frame)
    {
        _byRemote.TryGetValue((nic, remote), out var existing);
        // Someone else's answer is under way (the receive loop handles its frames), or a dial of ours that this Hello
        // does not make give way.
        if (existing is { State: LinkState.Handshaking } && !YieldsTo(existing, frame.AsSpan(HelloAddressOffset, NodeAddress.Length)))
            return;
        var message = frame.AsSpan(MeshWire.FrameHeaderLength + MeshWire.MessageHeaderLength);
        // The clock first (free), then the signature: only a fresh Hello signed by its key may cost anything more.
        if (!LinkHandshake.TrySplitHello(message, out var payload, out _) || !LinkHandshake.TryReadHello(payload, out var intro) || !IsFresh(intro.TimestampMs) || intro.Address == Address)
        {
            Interlocked.Increment(ref _hellosForged);
            CountHandshakeFailure("bad, forged or stale Hello");
            return;
        }
        if (existing is { State: LinkState.Up })
        {
            // Only the neighbour itself, with a Hello newer than the one this link was made with, replaces the link: a
            // replay of an old Hello, or someone else's Hello from its address, leaves it alone.
            if (existing.Peer != intro.Address || intro.TimestampMs <= existing.PeerHelloTimestampMs)
            {
                Interlocked.Increment(ref _hellosForged);
                CountHandshakeFailure("a Hello on a link that is up, not a newer one from its neighbour");
                return;
            }
            TakeDown(existing, "the neighbour restarted");
        }
        var limits = Options.Handshakes;
        var address = (remote as IPEndPoint)?.Address;
        var halfOpen = 0;
        var fromAddress = 0;
        foreach (var link in _byId.Values)
        {
            if (link.State != LinkState.Handshaking || link.IsInitiator)
                continue;
            halfOpen++;
            if (address is not null && link.Remote is IPEndPoint ip && ip.Address.Equals(address))
                fromAddress++;
        }
        if (halfOpen >= limits.HalfOpen || fromAddress >= limits.HalfOpenPerAddress)
        {
            Interlocked.Increment(ref _hellosHalfOpenCapped);
            return;
        }
        Link answered;
        while (true)
        {
            Link? crossing;
            lock (_registering)
            {
                // A dial of ours (found above, or registered since) gives way to this Hello as it would on the receive
                // loop; another answer, or a dial that does not give way, goes on, and this Hello is dropped.
                if (!_byRemote.TryGetValue((nic, remote), out crossing) || crossing.State == LinkState.Down)
                {
                    answered = NewLink(nic, remote, initiator: false, expectedPeer: null, answering: true);
                    break;
                }
                if (!YieldsTo(crossing, intro.Address.ToBytes()))
                    return;
            }
            TakeDown(crossing, CrossedDials);
        }
        try
        {
            using (DeferFlushes())
                answered.OnFrame(frame, Time.GetTimestamp());
        }
        finally
        {
            answered.Answering = false;
        }
    }

    private void StopHandshakeWorker() => _hellos?.Writer.TryComplete();
}
