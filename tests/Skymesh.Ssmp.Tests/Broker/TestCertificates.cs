using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>A CA and certificates made in the test with <see cref="CertificateRequest"/> (ECDSA P-256).</summary>
internal static class TestCertificates
{
    private const string ServerAuth = "1.3.6.1.5.5.7.3.1";
    private const string ClientAuth = "1.3.6.1.5.5.7.3.2";

    private static readonly Lazy<X509Certificate2> LazyCa = new(() => CreateCa("Skymesh Test CA"));
    private static readonly Lazy<X509Certificate2> LazyServer = new(() => Issue(Ca, "localhost", server: true, "localhost"));

    public static X509Certificate2 Ca => LazyCa.Value;

    /// <summary>The broker's certificate: CN and DNS name localhost, IP 127.0.0.1, issued by <see cref="Ca"/>.</summary>
    public static X509Certificate2 Server => LazyServer.Value;

    public static X509Certificate2 CreateCa(string name)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={name}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign, true));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
        var now = DateTimeOffset.UtcNow;
        using var cert = request.CreateSelfSigned(now.AddDays(-1), now.AddYears(1));
        return Reload(cert);
    }

    /// <summary>A leaf certificate with common name <paramref name="commonName"/> and the given DNS names, signed by <paramref name="ca"/>.</summary>
    public static X509Certificate2 Issue(X509Certificate2 ca, string commonName, bool server, params string[] dnsNames)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var request = new CertificateRequest($"CN={commonName}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, false));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(server ? ServerAuth : ClientAuth)], false));
        request.CertificateExtensions.Add(X509AuthorityKeyIdentifierExtension.CreateFromCertificate(ca, true, false));
        if (dnsNames.Length > 0 || server)
        {
            var san = new SubjectAlternativeNameBuilder();
            foreach (var name in dnsNames)
                san.AddDnsName(name);
            if (server)
                san.AddIpAddress(IPAddress.Loopback);
            request.CertificateExtensions.Add(san.Build());
        }
        var now = DateTimeOffset.UtcNow;
        using var issued = request.Create(ca, now.AddHours(-1), now.AddDays(30), RandomNumberGenerator.GetBytes(16));
        using var withKey = issued.CopyWithPrivateKey(key);
        return Reload(withKey);
    }

    /// <summary>Client options that trust only <see cref="Ca"/> for the broker and present <paramref name="clientCertificate"/> if given.</summary>
    public static SslClientAuthenticationOptions ClientOptions(X509Certificate2? clientCertificate = null)
    {
        var options = new SslClientAuthenticationOptions
        {
            TargetHost = "localhost",
            EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
            CertificateChainPolicy = new X509ChainPolicy
            {
                TrustMode = X509ChainTrustMode.CustomRootTrust,
                RevocationMode = X509RevocationMode.NoCheck,
                CustomTrustStore = { Ca },
            },
        };
        if (clientCertificate is not null)
        {
            options.ClientCertificates = [clientCertificate];
            // Present it whatever the server's list of acceptable issuers says.
            options.LocalCertificateSelectionCallback = (_, _, _, _, _) => clientCertificate;
        }
        return options;
    }

    /// <summary>Connects and completes the TLS handshake; the returned peer speaks SSMP inside TLS.</summary>
    public static async Task<RawPeer> ConnectTlsAsync(IPEndPoint endPoint, X509Certificate2? clientCertificate = null)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var cts = new CancellationTokenSource(RawPeer.ReadTimeout);
        await socket.ConnectAsync(endPoint, cts.Token);
        var ssl = new SslStream(new NetworkStream(socket, ownsSocket: true), leaveInnerStreamOpen: false);
        try
        {
            await ssl.AuthenticateAsClientAsync(ClientOptions(clientCertificate), cts.Token);
        }
        catch
        {
            await ssl.DisposeAsync();
            throw;
        }
        return new RawPeer(ssl, socket);
    }

    // On Linux a key made in memory is usable by SslStream once the certificate went through PKCS#12.
    private static X509Certificate2 Reload(X509Certificate2 certificate) =>
        X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pfx), null);
}
