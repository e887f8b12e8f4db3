using System.Net.Sockets;
using System.Runtime.Versioning;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Identity;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>
/// TLS and plain SSMP on one port, self-signed broker certificates, clients that pin them by fingerprint, and clients
/// that bring their own stream (docs/ssmp-broker.md, "TLS beside plaintext, and pinned self-signed certificates").
/// </summary>
[UnsupportedOSPlatform("windows")]
public class TlsOptionalTests
{
    private static readonly Lazy<X509Certificate2> Certificate = new(() => BrokerCertificate.CreateEphemeral());

    private static CancellationToken Token => TestContext.Current.CancellationToken;

    private static string Fingerprint => BrokerCertificate.Fingerprint(Certificate.Value);

    private static TestBroker StartBroker(bool allowPlaintext = true, TimeProvider? time = null) => TestBroker.Start(o =>
    {
        o.Tls = new SsmpTlsOptions { ServerCertificate = Certificate.Value, AllowPlaintext = allowPlaintext };
        o.Authenticators.Add(new KeyAuthenticator());
        o.Authenticators.Add(new OpenAuthenticator());
        if (time is not null)
            o.TimeProvider = time;
    });

    private static SsmpClientOptions Options(TestBroker broker, string id, System.Net.Security.SslClientAuthenticationOptions? tls = null) =>
        new() { Port = broker.Port, Id = id, Tls = tls, Reconnect = false };

    private static async Task<SsmpEvent> NextEventAsync(SsmpClient client)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Token);
        cts.CancelAfter(RawPeer.ReadTimeout);
        return await client.Events.ReadAsync(cts.Token);
    }

    [Fact]
    public async Task A_plain_client_and_a_pinned_tls_client_log_in_on_one_port_and_reach_each_other()
    {
        await using var broker = StartBroker();
        using var key = NodeKey.Generate();
        await using var plain = await SsmpClient.ConnectAsync(Options(broker, "plain"), Token);
        var pinnedOptions = Options(broker, "", SsmpTlsPinning.ClientOptions(Fingerprint));
        pinnedOptions.Key = key;
        await using var pinned = await SsmpClient.ConnectAsync(pinnedOptions, Token);
        await using var openOverTls = await SsmpClient.ConnectAsync(Options(broker, "tls-open", SsmpTlsPinning.ClientOptions(Fingerprint)), Token);
        Assert.Equal(3, broker.Broker.Snapshot().LoggedIn);
        Assert.Equal(1, broker.Broker.Snapshot().KeyLoginsAccepted);

        await plain.SubscribeAsync("t", cancellationToken: Token);
        await pinned.SubscribeAsync("t", cancellationToken: Token);
        await openOverTls.McastAsync("t", "from tls", Token);
        var toPlain = await NextEventAsync(plain);
        var toPinned = await NextEventAsync(pinned);
        Assert.Equal(("tls-open", "MCAST", "t", "from tls"), (toPlain.From, toPlain.VerbToken, toPlain.Target, toPlain.PayloadText));
        Assert.Equal(("tls-open", "MCAST", "t", "from tls"), (toPinned.From, toPinned.VerbToken, toPinned.Target, toPinned.PayloadText));

        await plain.UcastAsync(pinned.Id, "plain to tls", Token);
        var e = await NextEventAsync(pinned);
        Assert.Equal(("plain", "UCAST", "plain to tls"), (e.From, e.VerbToken, e.PayloadText));
        await pinned.UcastAsync("plain", "tls to plain", Token);
        e = await NextEventAsync(plain);
        Assert.Equal((key.Address.ToString(), "UCAST", "tls to plain"), (e.From, e.VerbToken, e.PayloadText));
        Assert.Equal(0, broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.TlsFailed));
    }

    [Fact]
    public async Task A_client_pinned_to_another_fingerprint_fails_naming_both_and_never_logs_in()
    {
        await using var broker = StartBroker();
        using var other = BrokerCertificate.CreateEphemeral();
        var wrong = BrokerCertificate.Fingerprint(other);
        var e = await Assert.ThrowsAsync<AuthenticationException>(() =>
            SsmpClient.ConnectAsync(Options(broker, "alice", SsmpTlsPinning.ClientOptions(wrong)), Token));
        Assert.Contains(wrong, e.Message, StringComparison.Ordinal);
        Assert.Contains(Fingerprint, e.Message, StringComparison.Ordinal);
        // The client checks the certificate when the handshake is over on its side; with TLS 1.3 the broker may have
        // finished its side by then, and sees a close rather than a failed handshake.
        await broker.WaitUntilAsync(s => s.ConnectionsAccepted == 1 && s.ConnectionsOpen == 0, "the broker has closed the connection");
        var counters = broker.Broker.Snapshot();
        Assert.Equal(1, counters.DisconnectsFor(DisconnectReason.TlsFailed) + counters.DisconnectsFor(DisconnectReason.PeerClosed));
        // Not a byte of SSMP reached it: no LOGIN, so no login.
        Assert.Equal(0, counters.BytesReceived);
        Assert.Equal(0, counters.RequestsReceived);
    }

    [Fact]
    public async Task The_trust_on_first_use_callback_is_shown_the_brokers_fingerprint_and_decides()
    {
        await using var broker = StartBroker();
        var seen = new List<string>();
        await using (var accepted = await SsmpClient.ConnectAsync(Options(broker, "alice", SsmpTlsPinning.ClientOptions(f =>
        {
            seen.Add(f);
            return true;
        })), Token))
        {
            await accepted.UcastAsync("alice", "to myself", Token);
            Assert.Equal("to myself", (await NextEventAsync(accepted)).PayloadText);
        }
        Assert.Equal([Fingerprint], seen);

        var e = await Assert.ThrowsAsync<AuthenticationException>(() =>
            SsmpClient.ConnectAsync(Options(broker, "bob", SsmpTlsPinning.ClientOptions(_ => false)), Token));
        Assert.Contains(Fingerprint, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_client_with_ConnectStream_talks_over_that_stream_and_runs_tls_inside_it()
    {
        await using var broker = StartBroker();
        var opened = new List<RecordingStream>();
        var options = Options(broker, "alice", SsmpTlsPinning.ClientOptions(Fingerprint));
        // Nothing listens here: only the stream reaches the broker.
        options.Host = "broker.invalid";
        options.Port = 1;
        options.ConnectStream = async cancellationToken =>
        {
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(broker.EndPoint, cancellationToken);
            var stream = new RecordingStream(new NetworkStream(socket, ownsSocket: true));
            opened.Add(stream);
            return stream;
        };
        await using (var client = await SsmpClient.ConnectAsync(options, Token))
        {
            await client.UcastAsync("alice", "secret words", Token);
            Assert.Equal("secret words", (await NextEventAsync(client)).PayloadText);
        }
        var only = Assert.Single(opened);
        Assert.True(only.Disposed, "the session disposes the stream it was given");
        var sent = only.Written();
        Assert.Equal(0x16, sent[0]);
        Assert.DoesNotContain("LOGIN", Encoding.Latin1.GetString(sent), StringComparison.Ordinal);
        Assert.DoesNotContain("secret words", Encoding.Latin1.GetString(sent), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_client_with_ConnectStream_and_no_tls_speaks_plain_ssmp_over_it()
    {
        await using var broker = StartBroker();
        RecordingStream? opened = null;
        var options = Options(broker, "alice");
        options.ConnectStream = async cancellationToken =>
        {
            var socket = new Socket(SocketType.Stream, ProtocolType.Tcp);
            await socket.ConnectAsync(broker.EndPoint, cancellationToken);
            return opened = new RecordingStream(new NetworkStream(socket, ownsSocket: true));
        };
        await using (var client = await SsmpClient.ConnectAsync(options, Token))
            await client.McastAsync("t", "x", Token);
        Assert.NotNull(opened);
        Assert.StartsWith("LOGIN alice open\n", Encoding.Latin1.GetString(opened.Written()), StringComparison.Ordinal);
    }

    [Fact]
    public void Cloned_options_keep_the_tls_options_and_the_stream_opener()
    {
        var tls = SsmpTlsPinning.ClientOptions(Fingerprint);
        Func<CancellationToken, ValueTask<Stream>> connect = _ => ValueTask.FromResult<Stream>(new MemoryStream());
        var copy = new SsmpClientOptions { Tls = tls, ConnectStream = connect }.Clone();
        Assert.Same(tls, copy.Tls);
        Assert.Same(connect, copy.ConnectStream);
    }

    [Fact]
    public async Task Without_AllowPlaintext_a_plain_client_of_a_tls_broker_still_fails_and_is_counted_as_a_tls_failure()
    {
        await using var broker = StartBroker(allowPlaintext: false);
        await Assert.ThrowsAnyAsync<SsmpException>(() => SsmpClient.ConnectAsync(Options(broker, "alice"), Token));
        await broker.WaitUntilAsync(s => s.DisconnectsFor(DisconnectReason.TlsFailed) == 1, "the handshake failure is counted");
        Assert.Equal(0, broker.Broker.Snapshot().LoggedIn);
    }

    [Fact]
    public async Task A_connection_that_closes_before_its_first_byte_just_closes()
    {
        await using var broker = StartBroker();
        var peer = await broker.ConnectAsync();
        await peer.DisposeAsync();
        await broker.WaitUntilAsync(s => s.DisconnectsFor(DisconnectReason.PeerClosed) == 1, "the close is counted");
        Assert.Equal(0, broker.Broker.Snapshot().DisconnectsFor(DisconnectReason.TlsFailed));
    }

    [Fact]
    public async Task A_silent_connection_is_closed_after_the_login_timeout_while_the_broker_waits_for_its_first_byte()
    {
        var time = new FakeTimeProvider();
        await using var broker = StartBroker(time: time);
        await using var silent = await broker.ConnectAsync();
        await broker.WaitUntilAsync(s => s.ConnectionsOpen == 1, "the connection is accepted");
        time.Advance(broker.Options.LoginTimeout);
        await silent.ExpectClosedAsync();
        await broker.WaitUntilAsync(s => s.DisconnectsFor(DisconnectReason.LoginTimeout) == 1, "it is counted as a login timeout");
    }

    [Fact]
    public async Task A_fingerprint_is_sha256_of_the_public_key_and_survives_a_new_certificate_for_the_same_key()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        using var first = BrokerCertificate.Create(key, DateTimeOffset.UnixEpoch.AddYears(56));
        using var second = BrokerCertificate.Create(key, DateTimeOffset.UnixEpoch.AddYears(57));
        var fingerprint = BrokerCertificate.Fingerprint(first);
        Assert.Matches("^sha256:[0-9a-f]{64}$", fingerprint);
        Assert.True(BrokerCertificate.IsFingerprint(fingerprint));
        Assert.Equal("sha256:" + Convert.ToHexStringLower(SHA256.HashData(key.ExportSubjectPublicKeyInfo())), fingerprint);
        Assert.NotEqual(first.SerialNumber, second.SerialNumber);
        Assert.Equal(fingerprint, BrokerCertificate.Fingerprint(second));
        // The same through the base type, as SslStream hands it over.
        using var plainCopy = X509CertificateLoader.LoadCertificate(first.RawData);
        Assert.Equal(fingerprint, BrokerCertificate.Fingerprint((X509Certificate)plainCopy));
        Assert.NotEqual(fingerprint, BrokerCertificate.Fingerprint(Certificate.Value));
    }

    [Theory]
    [InlineData("")]
    [InlineData("sha256:")]
    [InlineData("sha1:0123")]
    [InlineData("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")]
    [InlineData("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg")]
    public void Pinning_refuses_what_is_not_a_fingerprint(string text) =>
        Assert.Throws<ArgumentException>(() => SsmpTlsPinning.ClientOptions(text));

    [Fact]
    public async Task Pinning_accepts_a_fingerprint_in_upper_case()
    {
        await using var broker = StartBroker();
        await using var client = await SsmpClient.ConnectAsync(
            Options(broker, "alice", SsmpTlsPinning.ClientOptions(Fingerprint.ToUpperInvariant())), Token);
        Assert.Equal(1, broker.Broker.Snapshot().LoggedIn);
    }

    [Fact]
    public async Task LoadOrCreate_makes_an_owner_only_file_once_and_serves_tls_with_it()
    {
        using var directory = new TemporaryDirectory();
        var path = Path.Combine(directory.Path, "sub", "broker.pem");
        using var made = BrokerCertificate.LoadOrCreate(path, out var created);
        Assert.True(created);
        Assert.True(made.HasPrivateKey);
        Assert.Equal("CN=" + BrokerCertificate.CommonName, made.Subject);
        Assert.True(made.NotAfter - made.NotBefore > TimeSpan.FromDays(19 * 365));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(path));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.GetDirectoryName(path)!));
        var text = await File.ReadAllTextAsync(path, Token);
        Assert.Contains("-----BEGIN CERTIFICATE-----", text, StringComparison.Ordinal);
        Assert.Contains("-----BEGIN PRIVATE KEY-----", text, StringComparison.Ordinal);
        Assert.Single(Directory.GetFiles(Path.GetDirectoryName(path)!, "*", SearchOption.AllDirectories));

        using var again = BrokerCertificate.LoadOrCreate(path, out var createdAgain);
        Assert.False(createdAgain);
        Assert.Equal(BrokerCertificate.Fingerprint(made), BrokerCertificate.Fingerprint(again));
        Assert.Equal(made.Thumbprint, again.Thumbprint);

        // Loaded from the file, the certificate serves TLS (its key survives the round trip).
        await using var broker = TestBroker.Start(o => o.Tls = new SsmpTlsOptions { ServerCertificate = again, AllowPlaintext = true });
        await using var client = await SsmpClient.ConnectAsync(new SsmpClientOptions
        {
            Port = broker.Port,
            Id = "alice",
            Tls = SsmpTlsPinning.ClientOptions(BrokerCertificate.Fingerprint(made)),
            Reconnect = false,
        }, Token);
        Assert.Equal(1, broker.Broker.Snapshot().LoggedIn);
    }

    [Theory]
    [InlineData(UnixFileMode.GroupRead)]
    [InlineData(UnixFileMode.OtherRead)]
    [InlineData(UnixFileMode.GroupWrite)]
    public void A_certificate_file_that_group_or_others_may_access_is_refused_with_the_chmod_that_fixes_it(UnixFileMode extra)
    {
        using var directory = new TemporaryDirectory();
        var path = Path.Combine(directory.Path, "broker.pem");
        BrokerCertificate.LoadOrCreate(path).Dispose();
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | extra);
        var e = Assert.Throws<BrokerCertificateException>(() => BrokerCertificate.LoadOrCreate(path));
        Assert.Contains($"chmod 600 '{path}'", e.Message, StringComparison.Ordinal);
        Assert.Equal(path, e.Path);

        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        BrokerCertificate.Load(path).Dispose();
    }

    [Fact]
    public void A_file_that_is_not_a_certificate_with_its_key_is_refused_and_left_alone()
    {
        using var directory = new TemporaryDirectory();
        var path = Path.Combine(directory.Path, "broker.pem");
        File.WriteAllText(path, Certificate.Value.ExportCertificatePem());
        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        var e = Assert.Throws<BrokerCertificateException>(() => BrokerCertificate.LoadOrCreate(path));
        Assert.Contains(path, e.Message, StringComparison.Ordinal);
        Assert.Equal(Certificate.Value.ExportCertificatePem(), File.ReadAllText(path));
    }

    /// <summary>A stream that remembers what was written through it and whether it was disposed.</summary>
    private sealed class RecordingStream(Stream inner) : Stream
    {
        private readonly MemoryStream _written = new();

        public bool Disposed { get; private set; }

        public byte[] Written()
        {
            lock (_written)
                return _written.ToArray();
        }

        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => true;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override void Flush() => inner.Flush();

        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

        public override int Read(byte[] buffer, int offset, int count) => inner.Read(buffer, offset, count);

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) => inner.ReadAsync(buffer, cancellationToken);

        public override void Write(byte[] buffer, int offset, int count)
        {
            Record(buffer.AsSpan(offset, count));
            inner.Write(buffer, offset, count);
        }

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            Record(buffer.Span);
            return inner.WriteAsync(buffer, cancellationToken);
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        private void Record(ReadOnlySpan<byte> bytes)
        {
            lock (_written)
                _written.Write(bytes);
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                Disposed = true;
                inner.Dispose();
            }
            base.Dispose(disposing);
        }
    }

    private sealed class TemporaryDirectory : IDisposable
    {
        public string Path { get; } = Directory.CreateTempSubdirectory("skymesh-broker-cert-").FullName;

        public void Dispose() => Directory.Delete(Path, recursive: true);
    }
}
