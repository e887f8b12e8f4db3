using System.Net.Security;
using System.Security.Authentication;
using Skymesh.Ssmp.Broker;

namespace Skymesh.Ssmp.Client;

/// <summary>
/// TLS options that accept a broker by its certificate's key fingerprint (<see cref="BrokerCertificate.Fingerprint"/>)
/// rather than by a chain to an authority, for brokers with a self-signed certificate
/// (<c>skymesh broker --tls-self-signed</c>). Chain, name and date errors are ignored: the fingerprint alone decides.
/// A refused certificate fails the connect with an <see cref="AuthenticationException"/> whose message names the
/// fingerprint presented (and the one expected, when pinned).
/// </summary>
public static class SsmpTlsPinning
{
    /// <summary>Accepts exactly the broker whose certificate's key has <paramref name="fingerprint"/> (<c>sha256:</c> and 64 hex digits).</summary>
    public static SslClientAuthenticationOptions ClientOptions(string fingerprint)
    {
        ArgumentNullException.ThrowIfNull(fingerprint);
        var expected = fingerprint.Trim().ToLowerInvariant();
        if (!BrokerCertificate.IsFingerprint(expected))
            throw new ArgumentException($"'{fingerprint}' is not a broker fingerprint ({BrokerCertificate.FingerprintPrefix} and 64 hex digits).", nameof(fingerprint));
        return Options(presented => presented == expected
            ? null
            : $"The broker presented a certificate with fingerprint {presented}, but {expected} is pinned: this is not the broker expected, or someone on the path is posing as it.");
    }

    /// <summary>
    /// Asks <paramref name="accept"/> about the fingerprint of every certificate a broker presents, at every connect
    /// (trust on first use: the caller accepts the first one it sees, records it, and from then on only that one).
    /// </summary>
    public static SslClientAuthenticationOptions ClientOptions(Func<string, bool> accept)
    {
        ArgumentNullException.ThrowIfNull(accept);
        return Options(presented => accept(presented)
            ? null
            : $"The broker presented a certificate with fingerprint {presented}, which was not accepted.");
    }

    /// <param name="refusal">The reason to refuse the presented fingerprint, or null to accept it.</param>
    private static SslClientAuthenticationOptions Options(Func<string, string?> refusal) => new()
    {
        EnabledSslProtocols = SslProtocols.Tls12 | SslProtocols.Tls13,
        RemoteCertificateValidationCallback = (_, certificate, _, _) =>
        {
            if (certificate is null)
                throw new AuthenticationException("The broker presented no certificate.");
            var presented = BrokerCertificate.Fingerprint(certificate);
            // Thrown rather than returned false, so the message says which certificate came and which was wanted.
            return refusal(presented) is { } reason ? throw new AuthenticationException(reason) : true;
        },
    };
}
