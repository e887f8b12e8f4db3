using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Skymesh.Ssmp.Broker;

/// <summary>What a login scheme can see of the connection that is logging in.</summary>
public sealed class SsmpLoginContext
{
    public required string Id { get; init; }

    public bool IsAnonymous => Id == ".";

    /// <summary>Client certificate verified during the TLS handshake, if any.</summary>
    public X509Certificate2? ClientCertificate { get; init; }

    /// <summary>Whether the credential came as a binary (length-prefixed) payload rather than a text one.</summary>
    public bool CredentialIsBinary { get; init; }

    /// <summary>A scheme that refuses may say why here, in a few words without secrets; the broker logs it at debug.</summary>
    public string? RefusalReason { get; set; }

    /// <summary>
    /// Set by a scheme that refuses only because it cannot take another login now, not because the credential is
    /// bad. The broker then closes the connection without answering (as past its connection limit) instead of
    /// sending 401, so clients treat it as a lost connection and retry later rather than give up.
    /// </summary>
    public bool Busy { get; set; }

    /// <summary>The broker's state for the <c>key</c> scheme (window, replay set, counters); null outside a broker.</summary>
    internal KeyLoginGuard? KeyLogin { get; init; }
}

/// <summary>One login scheme (<c>LOGIN id scheme [credential]</c>).</summary>
public interface ISsmpAuthenticator
{
    string Scheme { get; }

    bool RequiresTls => false;

    /// <summary>
    /// How much a login under this scheme proves about who holds the id: 0 nothing (<c>open</c>), 1 membership
    /// (<c>secret</c>), 2 the identity itself (<c>cert</c>, <c>key</c>). A login never evicts a connection holding
    /// the same id with more proof than its own.
    /// </summary>
    int Assurance => 1;

    /// <summary>Checks the credential (payload content, binary prefix removed). Must not throw for bad input.</summary>
    bool Authenticate(SsmpLoginContext context, ReadOnlySpan<byte> credential);
}

/// <summary><c>open</c>: no check; for development and tests.</summary>
public sealed class OpenAuthenticator : ISsmpAuthenticator
{
    public string Scheme => "open";

    public int Assurance => 0;

    public bool Authenticate(SsmpLoginContext context, ReadOnlySpan<byte> credential) => true;
}

/// <summary><c>secret</c>: a shared secret compared in constant time; any id may use it.</summary>
public sealed class SecretAuthenticator : ISsmpAuthenticator
{
    private readonly byte[] _secret;

    public SecretAuthenticator(ReadOnlySpan<byte> secret)
    {
        if (secret.IsEmpty)
            throw new ArgumentException("The shared secret is empty.", nameof(secret));
        if (secret.Length > Codec.SsmpGrammar.MaxPayloadLength)
            throw new ArgumentException($"The shared secret is longer than one SSMP payload ({Codec.SsmpGrammar.MaxPayloadLength} bytes).", nameof(secret));
        _secret = secret.ToArray();
    }

    public string Scheme => "secret";

    /// <summary>Reads a secret file; one trailing newline (as editors add) is not part of the secret.</summary>
    public static SecretAuthenticator FromFile(string path) => new(ReadSecretFile(path));

    /// <summary>
    /// A shared secret as kept in a file: its bytes, less one trailing newline (LF or CR LF), so that the broker and a
    /// client reading the same file agree.
    /// </summary>
    /// <exception cref="ArgumentException">The file cannot be read, or holds nothing.</exception>
    public static byte[] ReadSecretFile(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ArgumentException($"Cannot read the secret file '{path}': {e.Message}", nameof(path), e);
        }
        var span = bytes.AsSpan();
        if (span.EndsWith("\r\n"u8))
            span = span[..^2];
        else if (span.EndsWith("\n"u8))
            span = span[..^1];
        if (span.IsEmpty)
            throw new ArgumentException($"The secret file '{path}' is empty.", nameof(path));
        return span.ToArray();
    }

    public bool Authenticate(SsmpLoginContext context, ReadOnlySpan<byte> credential) =>
        CryptographicOperations.FixedTimeEquals(credential, _secret);
}

/// <summary>
/// <c>cert</c>: on TLS, the id must be the client certificate's common name or one of its DNS names, or such a
/// name followed by <c>/suffix</c> so one certificate can hold several connections. An anonymous login needs
/// a verified certificate of any name.
/// </summary>
public sealed class CertAuthenticator : ISsmpAuthenticator
{
    public string Scheme => "cert";

    public int Assurance => 2;

    public bool RequiresTls => true;

    public bool Authenticate(SsmpLoginContext context, ReadOnlySpan<byte> credential)
    {
        var cert = context.ClientCertificate;
        if (cert is null)
            return false;
        if (context.IsAnonymous)
            return true;
        var id = context.Id;
        var slash = id.IndexOf('/', StringComparison.Ordinal);
        var name = slash >= 0 ? id[..slash] : id;
        if (name.Length == 0)
            return false;
        foreach (var candidate in Names(cert))
        {
            if (string.Equals(candidate, name, StringComparison.Ordinal))
                return true;
        }
        return false;
    }

    private static IEnumerable<string> Names(X509Certificate2 cert)
    {
        var cn = cert.GetNameInfo(X509NameType.SimpleName, forIssuer: false);
        if (!string.IsNullOrEmpty(cn))
            yield return cn;
        foreach (var ext in cert.Extensions)
        {
            if (ext is X509SubjectAlternativeNameExtension san)
            {
                foreach (var dns in san.EnumerateDnsNames())
                    yield return dns;
            }
        }
    }
}
