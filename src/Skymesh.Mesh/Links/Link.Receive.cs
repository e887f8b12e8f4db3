using System.Buffers.Binary;
using Skymesh.Identity;
using Skymesh.Mesh.Wire;

namespace Skymesh.Mesh.Links;

public sealed partial class Link
{
    /// <summary>
    /// One frame from the neighbour (on the interface's receive loop): checked, decrypted in place,
    /// and its messages handed on one by one. Bad frames are counted and dropped, never thrown.
    /// </summary>
    internal void OnFrame(Span<byte> frame, long now)
    {
        if (State == LinkState.Down)
            return;
        if (!FrameHeader.TryRead(frame, out var header, out var error))
        {
            _switch.CountBadFrame(error);
            return;
        }
        Span<byte> body;
        if ((header.Flags & FrameFlags.Encrypted) != 0)
        {
            if (_receiveCipher is null || !_replay.IsNew(header.Sequence))
            {
                _switch.CountBadFrame(_receiveCipher is null ? WireError.DecryptionFailed : WireError.None);
                return;
            }
            if (!_receiveCipher.TryDecrypt(frame, out body))
            {
                _switch.CountBadFrame(WireError.DecryptionFailed);
                return;
            }
            _replay.Accept(header.Sequence);
            // A frame only the initiator could seal proves it holds the ephemeral key it signed: the handshake is complete.
            if (!_confirmed && !IsInitiator && _helloAck is not null)
                MarkUp(now);
        }
        else
        {
            body = frame[MeshWire.FrameHeaderLength..];
        }
        Interlocked.Increment(ref _framesReceived);
        Interlocked.Add(ref _bytesReceived, frame.Length);
        Volatile.Write(ref _lastReceived, now);
        if (State == LinkState.Up)
        {
            CountForLoss(header.Sequence);
            ArqOnFrame(header.Sequence, now);
        }

        var plain = (header.Flags & FrameFlags.Encrypted) == 0;
        var reader = new MessageReader(body);
        while (reader.TryRead(out var message))
        {
            Interlocked.Increment(ref _messagesReceived);
            if (message.Label == MeshWire.ControlLabel)
            {
                OnControl(message.Type, message.Payload, plain, now);
                continue;
            }
            // Data is accepted only on an established link, and only sealed when encryption was agreed.
            if (State != LinkState.Up || (plain && _receiveCipher is not null))
            {
                _switch.CountBadFrame(WireError.None);
                continue;
            }
            _switch.Switch(this, message.Label, message.Type, message.Payload, now);
        }
        if (reader.Error != WireError.None)
            _switch.CountBadFrame(reader.Error);
        if (_missingCount > 0)
            ArqAskForMissing(now);
    }

    private void OnControl(byte type, ReadOnlySpan<byte> payload, bool plain, long now)
    {
        switch (type)
        {
            case LinkMessageType.Hello when plain && !IsInitiator:
                OnHello(payload);
                break;
            case LinkMessageType.HelloAck when plain && IsInitiator:
                OnHelloAck(payload, now);
                break;
            case LinkMessageType.Cookie when plain && IsInitiator && State == LinkState.Handshaking:
                OnCookie(payload);
                break;
            case LinkMessageType.HelloConfirm when plain && !IsInitiator:
                if (_helloAck is not null && Peer is { } peer && LinkHandshake.CheckHelloConfirm(payload, _helloAck, peer))
                    MarkUp(now);
                else
                    _switch.CountHandshakeFailure("HelloConfirm does not match");
                break;
            case LinkMessageType.Keepalive when State == LinkState.Up && payload.Length == 8 && (!plain || _receiveCipher is null):
                SendControl(LinkMessageType.KeepaliveAck, payload);
                break;
            case LinkMessageType.KeepaliveAck when State == LinkState.Up && payload.Length == 8 && (!plain || _receiveCipher is null):
                var sent = BinaryPrimitives.ReadInt64BigEndian(payload);
                // At least one tick, so that a measured round trip is never mistaken for "not measured yet".
                var rtt = Math.Max(1, _switch.Time.GetElapsedTime(sent, now).Ticks);
                _srttTicks = _srttTicks == 0 ? rtt : 0.875 * _srttTicks + 0.125 * rtt;
                _minRttTicks = _minRttTicks == 0 ? rtt : Math.Min(_minRttTicks, rtt);
                break;
            case LinkMessageType.Forwarded when State == LinkState.Up && (!plain || _receiveCipher is null):
                OnForwardedReport(payload);
                break;
            case LinkMessageType.Receipt when State == LinkState.Up && (!plain || _receiveCipher is null):
                _switch.OnReceipt(this, payload);
                break;
            case LinkMessageType.Nack when State == LinkState.Up && (!plain || _receiveCipher is null):
                OnNack(payload);
                break;
            case LinkMessageType.Close when State == LinkState.Up && (!plain || _receiveCipher is null):
                _switch.TakeDown(this, "closed by the neighbour");
                break;
            default:
                _switch.CountBadFrame(WireError.BadControlMessage);
                break;
        }
    }

    // Responder: a signed Hello, fresh enough; answer with a signed HelloAck bound to it. A repeated Hello
    // (our answer was lost) gets the same answer.
    private void OnHello(ReadOnlySpan<byte> message)
    {
        // The cookie, if any, was the switch's business (MeshSwitch.Handshakes.cs); the link answers the signed Hello.
        if (!LinkHandshake.TrySplitHello(message, out var hello, out _))
        {
            _switch.CountHandshakeFailure("bad or forged Hello");
            _switch.TakeDown(this, "bad or forged Hello");
            return;
        }
        if (_hello is not null)
        {
            if (hello.SequenceEqual(_hello) && _helloAck is not null)
                SendControlNow(LinkMessageType.HelloAck, _helloAck);
            return;
        }
        if (!LinkHandshake.TryReadHello(hello, out var intro))
        {
            _switch.CountHandshakeFailure("bad or forged Hello");
            _switch.TakeDown(this, "bad or forged Hello");
            return;
        }
        if (!_switch.IsFresh(intro.TimestampMs))
        {
            _switch.CountHandshakeFailure("Hello too old or from the future");
            _switch.TakeDown(this, "stale Hello");
            return;
        }
        if (intro.Address == _switch.Address)
        {
            _switch.TakeDown(this, "a Hello from ourselves");
            return;
        }
        if (_switch.Admission is { } admit && !admit(intro.Address, Remote, Interface))
        {
            // Not a failure of the handshake: the node's owner (or the policy they set) does not take this neighbour, or not yet.
            _switch.CountNeighbourRefused();
            _switch.TakeDown(this, $"{intro.Address} is not admitted as a neighbour");
            return;
        }
        _ephemeral = EphemeralKey.Generate();
        var encrypt = intro.Encrypt && _switch.Options.Encrypt;
        _hello = hello.ToArray();
        _helloAck = LinkHandshake.WriteHelloAck(_switch.Key, _ephemeral, encrypt, Interface.Mtu, _switch.NowMs(), hello);
        Peer = intro.Address;
        PeerHelloTimestampMs = intro.TimestampMs;
        if (encrypt)
            InstallKeys(intro.Ephemeral);
        SendControlNow(LinkMessageType.HelloAck, _helloAck);
    }

    // Initiator: the HelloAck must answer our Hello and come from the node we meant to reach.
    private void OnHelloAck(ReadOnlySpan<byte> ack, long now)
    {
        if (State == LinkState.Up)
        {
            // Our HelloConfirm was lost: send it again.
            if (_helloAck is not null && ack.SequenceEqual(_helloAck) && _helloConfirm is not null)
                SendControlNow(LinkMessageType.HelloConfirm, _helloConfirm);
            return;
        }
        if (_hello is null || !LinkHandshake.TryReadHelloAck(ack, _hello, out var intro) || !_switch.IsFresh(intro.TimestampMs))
        {
            _switch.CountHandshakeFailure("bad or forged HelloAck");
            return;
        }
        if (ExpectedPeer is { } expected && expected != intro.Address)
        {
            _switch.CountHandshakeFailure("HelloAck from another node than the one expected");
            _switch.TakeDown(this, $"the peer is {intro.Address}, not the expected {expected}");
            return;
        }
        Peer = intro.Address;
        PeerHelloTimestampMs = intro.TimestampMs;
        _helloAck = ack.ToArray();
        if (intro.Encrypt && _switch.Options.Encrypt)
            InstallKeys(intro.Ephemeral);
        _helloConfirm = LinkHandshake.WriteHelloConfirm(_switch.Key, ack);
        SendControlNow(LinkMessageType.HelloConfirm, _helloConfirm);
        MarkUp(now);
    }

    private void InstallKeys(ReadOnlySpan<byte> peerEphemeral)
    {
        Span<byte> shared = stackalloc byte[EphemeralKey.SharedSecretLength];
        try
        {
            _ephemeral!.DeriveSharedSecret(peerEphemeral, shared);
        }
        catch (ArgumentException)
        {
            _switch.CountHandshakeFailure("invalid ephemeral key");
            _switch.TakeDown(this, "invalid ephemeral key");
            return;
        }
        var (i2r, r2i) = LinkHandshake.DeriveKeys(shared, _hello, _helloAck);
        shared.Clear();
        _sendCipher = new FrameCipher(IsInitiator ? i2r : r2i);
        _receiveCipher = new FrameCipher(IsInitiator ? r2i : i2r);
        Array.Clear(i2r);
        Array.Clear(r2i);
    }

    private void MarkUp(long now)
    {
        TaskCompletionSource<Link>? waiter;
        lock (_queueLock)
        {
            if (State != LinkState.Handshaking)
                return;
            _confirmed = true;
            State = LinkState.Up;
            waiter = _upWaiter;
        }
        _ephemeral?.Dispose();
        _ephemeral = null;
        _lastReceived = now;
        _lastKeepaliveSent = now;
        waiter?.TrySetResult(this);
        _switch.OnLinkUp(this);
    }

    internal void StartHandshake()
    {
        _ephemeral = EphemeralKey.Generate();
        _hello = LinkHandshake.WriteHello(_switch.Key, _ephemeral, _switch.Options.Encrypt, Interface.Mtu, _switch.NowMs());
        _helloSent = _hello;
        _helloAttempts = 1;
        SendControlNow(LinkMessageType.Hello, _helloSent);
    }

    // Initiator: the far node is under load and wants proof that we receive at our address before it spends
    // anything on our Hello. Send it again at once with the cookie; later retries carry it too.
    private void OnCookie(ReadOnlySpan<byte> message)
    {
        if (_hello is null || !LinkHandshake.TryReadCookie(message, _hello, out var cookie))
        {
            _switch.CountBadFrame(WireError.BadControlMessage);
            return;
        }
        // The same cookie again means the Hello carrying it is still on its way or was lost: the retry timer resends it.
        if (_helloSent is not null && _helloSent.Length > _hello.Length && _helloSent.AsSpan(_hello.Length).SequenceEqual(cookie))
            return;
        _helloSent = LinkHandshake.WithCookie(_hello, cookie);
        SendControlNow(LinkMessageType.Hello, _helloSent);
    }

    /// <summary>Called by the switch's timer: handshake retries and timeout, keepalives, silence.</summary>
    internal void CheckTimers(long now)
    {
        var time = _switch.Time;
        var options = _switch.Options;
        if (State == LinkState.Handshaking)
        {
            var elapsed = time.GetElapsedTime(_handshakeStarted, now);
            if (elapsed >= options.HandshakeTimeout)
            {
                _switch.TakeDown(this, $"no handshake within {options.HandshakeTimeout.TotalSeconds:0.#} s");
                return;
            }
            if (IsInitiator && _helloSent is not null && elapsed >= options.HandshakeRetry * _helloAttempts)
            {
                _helloAttempts++;
                SendControlNow(LinkMessageType.Hello, _helloSent);
            }
            return;
        }
        if (State != LinkState.Up)
            return;
        var silent = time.GetElapsedTime(Volatile.Read(ref _lastReceived), now);
        if (silent >= options.DeadAfter)
        {
            _switch.TakeDown(this, $"silent for {silent.TotalSeconds:0.#} s");
            return;
        }
        if (time.GetElapsedTime(_lastKeepaliveSent, now) >= options.KeepaliveInterval)
        {
            _lastKeepaliveSent = now;
            Span<byte> stamp = stackalloc byte[8];
            BinaryPrimitives.WriteInt64BigEndian(stamp, now);
            SendControl(LinkMessageType.Keepalive, stamp);
            UpdateLoss();
        }
        ArqOnTimer(now);
    }

    /// <summary>Ends the link once (false if it already ended): tells the neighbour when it was up.</summary>
    internal bool Close(string reason)
    {
        if (Interlocked.Exchange(ref _closed, 1) != 0)
            return false;
        if (State == LinkState.Up)
        {
            // Best effort: tell the neighbour, sealed like any frame, before the queue is dropped.
            var payload = System.Text.Encoding.UTF8.GetBytes(reason.Length > 200 ? reason[..200] : reason);
            var builder = new FrameBuilder(Interface.Mtu);
            builder.TryAdd(MeshWire.ControlLabel, LinkMessageType.Close, payload, _sendCipher is not null);
            lock (_queueLock)
                Interface.TrySend(Remote, builder.Seal(NextSequence(), _sendCipher));
        }
        TaskCompletionSource<Link>? waiter;
        lock (_queueLock)
        {
            State = LinkState.Down;
            DownReason = reason;
            waiter = _upWaiter;
        }
        waiter?.TrySetException(new LinkFailedException(reason));
        _down.TrySetResult(reason);
        ReleaseRetained();
        // The frame ciphers are left to the finalizer: a flush or a receive under way may still be using them.
        _ephemeral?.Dispose();
        return true;
    }

    private int _closed;

    private readonly TaskCompletionSource<string> _down = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Completes, with the reason, when the link goes down.</summary>
    public Task<string> WaitDownAsync() => _down.Task;

    private void CountForLoss(ulong sequence)
    {
        if (_lossWindowStartSequence < 0)
            _lossWindowStartSequence = (long)sequence;
        _lossWindowReceived++;
        _lossHighest = Math.Max(_lossHighest, (long)sequence);
    }

    private long _lossHighest = -1;

    private void UpdateLoss()
    {
        if (_lossWindowStartSequence < 0 || _lossHighest < _lossWindowStartSequence)
            return;
        var expected = _lossHighest - _lossWindowStartSequence + 1;
        if (expected >= 10)
        {
            _loss = Math.Clamp(1.0 - (double)_lossWindowReceived / expected, 0, 1);
            _lossWindowStartSequence = _lossHighest + 1;
            _lossWindowReceived = 0;
        }
    }

    /// <summary>
    /// Sliding window over received sequence numbers: a frame is taken once, and not if 1,024 or more behind the
    /// newest. Wide enough that a frame sent again on request (<see cref="OnNack"/>) still fits behind a fast flow.
    /// </summary>
    private struct ReplayWindow
    {
        private const int Size = 1024;
        private ulong _highest;
        private bool _any;
        private Bits _bits;

        [System.Runtime.CompilerServices.InlineArray(Size / 64)]
        private struct Bits
        {
            private ulong _first;
        }

        public readonly bool IsNew(ulong sequence)
        {
            if (!_any || sequence > _highest)
                return true;
            if (_highest - sequence >= Size)
                return false;
            var at = (int)(sequence % Size);
            return (_bits[at >> 6] & (1UL << (at & 63))) == 0;
        }

        public void Accept(ulong sequence)
        {
            if (!_any || sequence > _highest)
            {
                var from = _any ? _highest + 1 : sequence;
                if (!_any || sequence - from >= Size)
                {
                    ((Span<ulong>)_bits).Clear();
                }
                else
                {
                    for (var s = from; s < sequence; s++)
                    {
                        var gap = (int)(s % Size);
                        _bits[gap >> 6] &= ~(1UL << (gap & 63));
                    }
                }
                _any = true;
                _highest = sequence;
            }
            var at = (int)(sequence % Size);
            _bits[at >> 6] |= 1UL << (at & 63);
        }
    }
}

/// <summary>A link could not be established or went down; the message says why.</summary>
public sealed class LinkFailedException : Exception
{
    public LinkFailedException(string message)
        : base(message)
    {
    }

    public LinkFailedException()
    {
    }

    public LinkFailedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
