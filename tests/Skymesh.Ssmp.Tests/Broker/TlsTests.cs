using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Skymesh.Ssmp.Broker;
using Skymesh.Ssmp.Client;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>spec §1 TLS and §7 the cert and secret schemes.</summary>
public class TlsTests
{
    // alice's certificate: common name alice, one DNS name alice-laptop.
    private static readonly Lazy<X509Certificate2> Alice = new(() => TestCertificates.Issue(TestCertificates.Ca, "alice", server: false, "alice-laptop"));

    private static TestBroker StartCertBroker() => TestBroker.Start(o =>
    {
        o.Tls = new SsmpTlsOptions
        {
            ServerCertificate = TestCertificates.Server,
            ClientCertificateAuthorities = [TestCertificates.Ca],
        };
        o.Authenticators.Add(new CertAuthenticator());
    });

    [Theory]
    [InlineData("alice")]
    [InlineData("alice-laptop")]
    [InlineData("alice/phone")]
    [InlineData("alice-laptop/2")]
    [InlineData("alice/a/b")]
    public async Task The_cert_scheme_accepts_the_common_name_a_dns_name_or_either_with_a_suffix(string id)
    {
        await using var broker = StartCertBroker();
        await using var peer = await TestCertificates.ConnectTlsAsync(broker.EndPoint, Alice.Value);
        await peer.SendAsync($"LOGIN {id} cert\n");
        await peer.ExpectLineAsync("200");
        await peer.SendAsync($"UCAST {id} over tls\n");
        await peer.ExpectLinesInAnyOrderAsync("200", $"000 {id} UCAST {id} over tls");
    }

    [Theory]
    [InlineData("bob")]
    [InlineData("alicex")]
    [InlineData("ALICE")]
    [InlineData("alice-laptop.example")]
    [InlineData("/alice")]
    [InlineData("bob/alice")]
    public async Task The_cert_scheme_refuses_an_id_the_certificate_does_not_name_with_401(string id)
    {
        await using var broker = StartCertBroker();
        await using var peer = await TestCertificates.ConnectTlsAsync(broker.EndPoint, Alice.Value);
        await peer.SendAsync($"LOGIN {id} cert\n");
        await peer.ExpectLineAsync("401 cert");
        await peer.ExpectClosedAsync();
    }

    [Fact]
    public async Task The_cert_scheme_refuses_a_client_without_a_certificate_with_401()
    {
        await using var broker = StartCertBroker();
        await using var peer = await TestCertificates.ConnectTlsAsync(broker.EndPoint);
        await peer.SendAsync("LOGIN alice cert\n");
        await peer.ExpectLineAsync("401 cert");
        await peer.ExpectClosedAsync();
    }

    [Fact]
    public async Task Anonymous_login_through_the_cert_scheme_needs_a_trusted_certificate()
    {
        await using var broker = StartCertBroker();
        await using var withCert = await TestCertificates.ConnectTlsAsync(broker.EndPoint, Alice.Value);
        await withCert.SendAsync("LOGIN . cert\n");
        await withCert.ExpectLineAsync("200");
        await using var without = await TestCertificates.ConnectTlsAsync(broker.EndPoint);
        await without.SendAsync("LOGIN . cert\n");
        await without.ExpectLineAsync("401 cert");
        await without.ExpectClosedAsync();
    }

    [Fact]
    public async Task A_client_certificate_from_an_untrusted_ca_is_refused()
    {
        await using var broker = StartCertBroker();
        using var evilCa = TestCertificates.CreateCa("Skymesh Test CA");
        using var forged = TestCertificates.Issue(evilCa, "alice", server: false, "alice-laptop");
        var received = Array.Empty<byte>();
        try
        {
            // With TLS 1.3 the client may finish its handshake before the broker has checked the certificate;
            // the refusal then arrives as an alert on the first read.
            await using var peer = await TestCertificates.ConnectTlsAsync(broker.EndPoint, forged);
            await peer.SendAsync("LOGIN alice cert\n");
            received = await peer.DrainUntilClosedAsync();
        }
        catch (Exception e) when (e is AuthenticationException or IOException)
        {
        }
        Assert.Equal("", Encoding.Latin1.GetString(received));
        await broker.WaitUntilAsync(s => s.DisconnectsFor(DisconnectReason.TlsFailed) == 1, "the handshake failure is counted");
    }

    [Fact]
    public async Task A_plain_tcp_client_on_a_tls_broker_gets_no_ssmp_answer_and_is_closed()
    {
        await using var broker = StartCertBroker();
        await using var peer = await broker.ConnectAsync();
        await peer.SendAsync("LOGIN alice open\n");
        var received = await peer.DrainUntilClosedAsync();
        Assert.DoesNotContain("200", Encoding.Latin1.GetString(received), StringComparison.Ordinal);
        await broker.WaitUntilAsync(s => s.DisconnectsFor(DisconnectReason.TlsFailed) == 1, "the handshake failure is counted");
    }

    [Fact]
    public async Task The_secret_scheme_over_tls_accepts_the_right_secret_and_refuses_a_wrong_one_with_401()
    {
        await using var broker = TestBroker.Start(o =>
        {
            o.Tls = new SsmpTlsOptions { ServerCertificate = TestCertificates.Server };
            o.Authenticators.Add(new SecretAuthenticator("correct horse"u8));
            o.Authenticators.Add(new OpenAuthenticator());
        });
        await using var alice = await TestCertificates.ConnectTlsAsync(broker.EndPoint);
        await alice.SendAsync("LOGIN alice secret correct horse\n");
        await alice.ExpectLineAsync("200");
        await using var mallory = await TestCertificates.ConnectTlsAsync(broker.EndPoint);
        await mallory.SendAsync("LOGIN mallory secret correct horse \n");
        await mallory.ExpectLineAsync("401 secret open");
        await mallory.ExpectClosedAsync();
        await alice.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task Requests_and_events_cross_tls_byte_for_byte_including_binary_payloads()
    {
        await using var broker = StartCertBroker();
        await using var alice = await TestCertificates.ConnectTlsAsync(broker.EndPoint, Alice.Value);
        await using var laptop = await TestCertificates.ConnectTlsAsync(broker.EndPoint, Alice.Value);
        await alice.SendAsync("LOGIN alice cert\n");
        await alice.ExpectLineAsync("200");
        await laptop.SendAsync("LOGIN alice-laptop cert\nSUBSCRIBE t\n");
        await laptop.ExpectLineAsync("200");
        await laptop.ExpectLineAsync("200");
        await alice.SendAsync("MCAST t \u0000\u0002a\nb\nUCAST alice-laptop \u0003\u00FF" + new string('\n', 1024) + "\n");
        await alice.ExpectLineAsync("200");
        await alice.ExpectLineAsync("200");
        await laptop.ExpectLineAsync("000 alice MCAST t \u0000\u0002a\nb");
        await laptop.ExpectLineAsync("000 alice UCAST alice-laptop \u0003\u00FF" + new string('\n', 1024));
        await laptop.ExpectNothingMoreAsync();
    }

    [Fact]
    public async Task The_client_library_logs_in_with_its_certificate_and_talks_over_tls()
    {
        await using var broker = StartCertBroker();
        await using var client = await SsmpClient.ConnectAsync(new SsmpClientOptions
        {
            Port = broker.Port,
            Id = "alice/client",
            Scheme = "cert",
            Tls = TestCertificates.ClientOptions(Alice.Value),
            Reconnect = false,
        }, TestContext.Current.CancellationToken);
        await client.SubscribeAsync("t", cancellationToken: TestContext.Current.CancellationToken);
        await using var peer = await TestCertificates.ConnectTlsAsync(broker.EndPoint, Alice.Value);
        await peer.SendAsync("LOGIN alice cert\nMCAST t hello client\n");
        await peer.ExpectLineAsync("200");
        await peer.ExpectLineAsync("200");
        using var cts = new CancellationTokenSource(RawPeer.ReadTimeout);
        var e = await client.Events.ReadAsync(cts.Token);
        Assert.Equal(("alice", "MCAST", "t", "hello client"), (e.From, e.VerbToken, e.Target, e.PayloadText));
    }

    [Fact]
    public async Task The_client_library_reports_a_refused_certificate_login_as_401()
    {
        await using var broker = StartCertBroker();
        var e = await Assert.ThrowsAsync<SsmpException>(() => SsmpClient.ConnectAsync(new SsmpClientOptions
        {
            Port = broker.Port,
            Id = "bob",
            Scheme = "cert",
            Tls = TestCertificates.ClientOptions(Alice.Value),
            Reconnect = false,
        }, TestContext.Current.CancellationToken));
        Assert.Equal(401, e.Code);
    }
}
