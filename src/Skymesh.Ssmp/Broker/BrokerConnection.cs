using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Logging;

namespace Skymesh.Ssmp.Broker;

/// <summary>
/// One client connection. Its read loop parses and handles requests (BrokerConnection.Read.cs); anyone may
/// queue bytes towards it, and a pooled work item sends whatever is queued in one write (BrokerConnection.Write.cs).
/// </summary>
internal sealed partial class BrokerConnection
{
    private readonly SsmpBroker _broker;
    private readonly Socket _socket;
    private readonly long _acceptedAt;
    private readonly object _subscriptionsLock = new();
    private readonly Dictionary<string, Topic> _subscriptions = new(StringComparer.Ordinal);
    private Stream _stream;
    private X509Certificate2? _clientCertificate;
    private long _lastActivity;
    private bool _pingSent;
    private int _cleanedUp;
    private DisconnectReason _reason;

    public BrokerConnection(SsmpBroker broker, long serial, Socket socket)
    {
        _broker = broker;
        Serial = serial;
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _acceptedAt = broker.Time.GetTimestamp();
        _lastActivity = _acceptedAt;
        _maxQueued = broker.Options.MaxQueuedBytesPerConnection;
    }

    public long Serial { get; }

    /// <summary>The logged-in identifier, null before LOGIN.</summary>
    public string? Id { get; private set; }

    public bool LoggedIn => Id is not null;

    public bool IsAnonymous => Id == ".";

    /// <summary>What the login scheme proved (<see cref="ISsmpAuthenticator.Assurance"/>).</summary>
    public int Assurance { get; private set; }

    /// <summary><c>000 id </c>: what precedes every request this connection's events forward.</summary>
    public byte[] EventPrefix { get; private set; } = [];

    public long RequestCount;
    public long EventCount;
    public long BytesIn;
    public long BytesOut;

    public void Start() => _ = RunAsync();

    private async Task RunAsync()
    {
        try
        {
            if (_broker.Options.Tls is { } tls)
            {
                var tlsNow = true;
                if (tls.AllowPlaintext)
                {
                    var first = await PeekFirstByteAsync();
                    if (first < 0)
                    {
                        Abort(DisconnectReason.PeerClosed);
                        return;
                    }
                    tlsNow = first == TlsHandshakeRecord;
                }
                if (tlsNow && !await HandshakeAsync(tls))
                    return;
            }
            await ReadLoopAsync();
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            Abort(DisconnectReason.SocketError);
        }
        catch (Exception e)
        {
            // A bug, not a peer's doing: log it loudly, but keep the broker serving everyone else.
            Log.Unexpected(_broker.Logger, Serial, e);
            Abort(DisconnectReason.SocketError);
        }
    }

    // The content type of a TLS handshake record, which every ClientHello starts with; no SSMP request does.
    private const byte TlsHandshakeRecord = 0x16;

    /// <summary>
    /// The connection's first byte, left unread for whoever reads next; -1 when the peer closed before sending one.
    /// Bounded by the login timeout like the rest of the login: the sweep closes the socket, which ends the wait.
    /// </summary>
    private async Task<int> PeekFirstByteAsync()
    {
        var first = new byte[1];
        var n = await _socket.ReceiveAsync(first, SocketFlags.Peek, _broker.Stopping);
        return n == 0 ? -1 : first[0];
    }

    private async Task<bool> HandshakeAsync(SsmpTlsOptions tls)
    {
        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false);
        _stream = ssl;
        var authorities = tls.ClientCertificateAuthorities;
        var options = new SslServerAuthenticationOptions
        {
            ServerCertificate = tls.ServerCertificate,
            ClientCertificateRequired = authorities is not null,
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            RemoteCertificateValidationCallback = (_, certificate, _, _) =>
                certificate is null || (authorities is not null && ChainsTo(certificate, authorities)),
        };
        try
        {
            await ssl.AuthenticateAsServerAsync(options, _broker.Stopping);
        }
        catch (Exception e) when (e is AuthenticationException or IOException or SocketException or ObjectDisposedException or OperationCanceledException)
        {
            Log.TlsFailed(_broker.Logger, Serial, e.Message);
            Abort(DisconnectReason.TlsFailed);
            return false;
        }
        if (ssl.RemoteCertificate is { } remote)
            _clientCertificate = remote as X509Certificate2 ?? new X509Certificate2(remote);
        return true;
    }

    private static bool ChainsTo(X509Certificate certificate, X509Certificate2Collection authorities)
    {
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(authorities);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var cert = new X509Certificate2(certificate);
        return chain.Build(cert);
    }

    /// <summary>Called by the broker's sweep timer: login timeout, idle PING, and close when the PING goes unanswered.</summary>
    public void CheckTimers(long now)
    {
        if (Volatile.Read(ref _cleanedUp) != 0)
            return;
        var options = _broker.Options;
        if (!LoggedIn)
        {
            if (_broker.Time.GetElapsedTime(_acceptedAt, now) >= options.LoginTimeout)
                Abort(DisconnectReason.LoginTimeout);
            return;
        }
        var idle = _broker.Time.GetElapsedTime(Volatile.Read(ref _lastActivity), now);
        if (idle >= options.PingInterval + options.PongTimeout)
        {
            Abort(DisconnectReason.IdleTimeout);
        }
        else if (idle >= options.PingInterval && !_pingSent)
        {
            _pingSent = true;
            Enqueue("000 . PING\n"u8);
        }
    }

    private void Touch()
    {
        Volatile.Write(ref _lastActivity, _broker.Time.GetTimestamp());
        _pingSent = false;
    }

    /// <summary>
    /// Ends the connection now: the socket is closed, queued bytes are dropped, the id is released and every
    /// topic is left (with presence events). Safe to call from any thread, any number of times.
    /// </summary>
    /// <returns>True for the call that closed it; false when it was closed already.</returns>
    public bool Abort(DisconnectReason reason)
    {
        if (!MarkClosed(reason, graceful: false))
            return false;
        try
        {
            _stream.Dispose();
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
        }
        // Leaving topics takes topic locks; the caller may hold one (a slow consumer found while fanning out),
        // so the rest runs on the pool.
        ThreadPool.UnsafeQueueUserWorkItem(static c => c.CleanUp(), this, preferLocal: false);
        return true;
    }

    /// <summary>
    /// Ends the connection because a newer login took its id. Unlike <see cref="Abort"/> it leaves every topic
    /// before returning, so presence watchers hear of the old membership's end before the new connection,
    /// whose LOGIN is being handled by the caller, can start one (spec §6). The caller holds no topic lock.
    /// </summary>
    public void Evict()
    {
        Abort(DisconnectReason.Evicted);
        // Runs the clean-up here unless it has already run; the copy Abort queued then does nothing.
        CleanUp();
    }

    /// <summary>Stops reading, leaves every topic now, and closes the socket once the queued bytes are sent.</summary>
    private void CloseAfterFlush(DisconnectReason reason)
    {
        if (!MarkClosed(reason, graceful: true))
            return;
        StartDrainTimer();
        CleanUp();
        bool shutdownNow;
        lock (_outLock)
            shutdownNow = !_flushing;
        if (shutdownNow)
            FinishShutdown();
    }

    /// <summary>
    /// Stops accepting bytes for this connection. A graceful close still sends what is queued (the last
    /// response, e.g. the 400 or the CLOSE's 200) and then shuts the socket; an abort drops it. The flusher
    /// must learn both in one step, or it may drop the queue as if the connection had been aborted.
    /// </summary>
    private bool MarkClosed(DisconnectReason reason, bool graceful)
    {
        lock (_outLock)
        {
            if (_closed)
                return false;
            _closed = true;
            _shutdownAfterFlush = graceful;
            _reason = reason;
        }
        return true;
    }

    private void CleanUp()
    {
        if (Interlocked.Exchange(ref _cleanedUp, 1) != 0)
            return;
        if (LoggedIn)
            LeaveAllTopics();
        _broker.Forget(this);
        _broker.Count(_reason);
        Log.Closed(_broker.Logger, Serial, Id ?? "-", _reason);
    }

    private static string Text(ReadOnlySpan<byte> ascii) => Encoding.ASCII.GetString(ascii);

    private static partial class Log
    {
        [LoggerMessage(EventId = 10, Level = LogLevel.Debug, Message = "Connection {Serial} ({Id}) closed: {Reason}")]
        public static partial void Closed(ILogger logger, long serial, string id, DisconnectReason reason);

        [LoggerMessage(EventId = 11, Level = LogLevel.Debug, Message = "Connection {Serial}: bad request ({Error}), answered 400 and closed")]
        public static partial void BadRequest(ILogger logger, long serial, Codec.SsmpError error);

        [LoggerMessage(EventId = 12, Level = LogLevel.Debug, Message = "Connection {Serial}: TLS handshake failed: {Message}")]
        public static partial void TlsFailed(ILogger logger, long serial, string message);

        [LoggerMessage(EventId = 13, Level = LogLevel.Warning, Message = "Connection {Serial}: slow consumer, {Queued} bytes queued; disconnected")]
        public static partial void SlowConsumer(ILogger logger, long serial, long queued);

        [LoggerMessage(EventId = 14, Level = LogLevel.Debug, Message = "Connection {Serial}: login as {Id} through {Scheme} refused: {Reason}")]
        public static partial void LoginRefused(ILogger logger, long serial, string id, string scheme, string reason);

        [LoggerMessage(EventId = 15, Level = LogLevel.Error, Message = "Connection {Serial}: unexpected error")]
        public static partial void Unexpected(ILogger logger, long serial, Exception exception);
    }
}
