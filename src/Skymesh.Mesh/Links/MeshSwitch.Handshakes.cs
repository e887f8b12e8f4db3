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

    public void Validate()
    {
        if (!(HellosPerSecondPerAddress > 0) || !(HellosPerSecond > 0) || BurstPerAddress < 1 || Queue < 1 || HalfOpenPerAddress < 1 || HalfOpen < HalfOpenPerAddress)
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
/// </summary>
public sealed partial class MeshSwitch
{
    private readonly Dictionary<IPAddress, Bucket> _buckets = [];
    private readonly Lock _admission = new();
    private Bucket _allHellos;
    private Channel<(IMeshInterface Nic, EndPoint Remote, byte[] Frame)>? _hellos;
    private Task _handshakeWorker = Task.CompletedTask;
    private long _hellosRateLimited, _hellosQueueFull, _hellosForged, _hellosHalfOpenCapped;

    /// <summary>Hellos dropped, by reason: over the rate limits, queue full, forged or stale (checked by the worker), half-open caps reached.</summary>
    public (long RateLimited, long QueueFull, long Refused, long HalfOpenCapped) HelloDrops =>
        (Interlocked.Read(ref _hellosRateLimited), Interlocked.Read(ref _hellosQueueFull), Interlocked.Read(ref _hellosForged), Interlocked.Read(ref _hellosHalfOpenCapped));

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
        lock (_admission)
        {
            if (!Take(ref _allHellos, limits.HellosPerSecond, limits.HellosPerSecond, now))
            {
                Interlocked.Increment(ref _hellosRateLimited);
                return;
            }
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
        if (!_hellos.Writer.TryWrite((nic, remote, frame.ToArray())))
            Interlocked.Increment(ref _hellosQueueFull);
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

    /// <summary>The handshake worker: the expensive checks and the answer, one Hello at a time, off the receive loops.</summary>
    private async Task HandshakeWorkerAsync()
    {
        var reader = _hellos!.Reader;
        try
        {
            while (await reader.WaitToReadAsync())
            {
                while (reader.TryRead(out var hello))
                    Answer(hello.Nic, hello.Remote, hello.Frame);
            }
        }
        catch (Exception e) when (e is ObjectDisposedException or ChannelClosedException)
        {
        }
    }

    private void Answer(IMeshInterface nic, EndPoint remote, byte[] frame)
    {
        if (_byRemote.TryGetValue((nic, remote), out var existing) && existing.State != LinkState.Down)
            return; // Someone else's answer is under way, or the link is up: the receive loop handles its frames.
        var payload = frame.AsSpan(MeshWire.FrameHeaderLength + MeshWire.MessageHeaderLength);
        // The clock first (free), then the signature: only a fresh Hello signed by its key may cost anything more.
        if (!LinkHandshake.TryReadHello(payload, out var intro) || !IsFresh(intro.TimestampMs) || intro.Address == Address)
        {
            Interlocked.Increment(ref _hellosForged);
            CountHandshakeFailure("bad, forged or stale Hello");
            return;
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
        var answered = NewLink(nic, remote, initiator: false, expectedPeer: null, answering: true);
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
