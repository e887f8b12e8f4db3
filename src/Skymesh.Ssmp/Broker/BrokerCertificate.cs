using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Skymesh.Identity;

namespace Skymesh.Ssmp.Broker;

/// <summary>
/// A self-signed certificate for a broker that clients authenticate by its key's fingerprint rather than by a chain
/// to an authority (docs/ssmp-broker.md, "TLS beside plaintext, and pinned self-signed certificates").
/// <para>
/// The file holds the certificate and its private key as PEM, one after the other (<c>CERTIFICATE</c>, then
/// <c>PRIVATE KEY</c>, PKCS#8), and must be readable by its owner only: it is created with mode 0600, and a file that
/// group or others may access is refused.
/// </para>
/// </summary>
public static class BrokerCertificate
{
    /// <summary>The common name of the certificates made here.</summary>
    public const string CommonName = "skymesh-broker";

    /// <summary>What every fingerprint starts with: the hash, then its lowercase hex digits.</summary>
    public const string FingerprintPrefix = "sha256:";

    // How long a made certificate is valid. Clients pin the key, not the dates, but other tools look at them.
    private static readonly TimeSpan Validity = TimeSpan.FromDays(20 * 365);

    // A real file is under 1 KB; anything far larger is not ours and is not read into memory.
    private const int MaxFileLength = 64 * 1024;

    private const UnixFileMode OwnerReadWrite = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode OwnerOnlyDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    /// <inheritdoc cref="LoadOrCreate(string, out bool, TimeProvider?)"/>
    public static X509Certificate2 LoadOrCreate(string path, TimeProvider? timeProvider = null) => LoadOrCreate(path, out _, timeProvider);

    /// <summary>
    /// Loads the certificate at <paramref name="path"/>, or, when no file is there, makes one (ECDSA P-256, common
    /// name <see cref="CommonName"/>, valid for 20 years from <paramref name="timeProvider"/>'s clock) and writes it
    /// there owner-only, creating the directory (owner-only) if needed. An existing file is never replaced.
    /// </summary>
    /// <param name="created">True when this call made the certificate.</param>
    /// <exception cref="BrokerCertificateException">The file exists but cannot be used, or cannot be created.</exception>
    public static X509Certificate2 LoadOrCreate(string path, out bool created, TimeProvider? timeProvider = null)
    {
        path = FullPath(path);
        created = false;
        if (!File.Exists(path))
        {
            using var certificate = CreateEphemeral(timeProvider);
            created = TryCreate(path, certificate);
        }
        return Load(path);
    }

    /// <summary>Loads a certificate and its private key from <paramref name="path"/> (the format of <see cref="LoadOrCreate(string, TimeProvider?)"/>).</summary>
    /// <exception cref="BrokerCertificateException">
    /// The file is missing, unreadable, accessible to group or others, or not a PEM certificate with its private key.
    /// </exception>
    public static X509Certificate2 Load(string path)
    {
        path = FullPath(path);
        var content = ReadOwnerOnlyFile(path);
        try
        {
            var text = Encoding.UTF8.GetString(content);
            using var certificate = X509Certificate2.CreateFromPem(text, text);
            return Reload(certificate);
        }
        catch (Exception e) when (e is CryptographicException or ArgumentException)
        {
            throw Fail(path, $"does not hold a PEM certificate followed by its private key ({e.Message}).", e);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(content);
        }
    }

    /// <summary>A new certificate held in memory only (for tests and brokers that live inside another program).</summary>
    public static X509Certificate2 CreateEphemeral(TimeProvider? timeProvider = null)
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        return Reload(Create(key, (timeProvider ?? TimeProvider.System).GetUtcNow()));
    }

    /// <summary>
    /// <c>sha256:</c> and the 64 lowercase hex digits of the SHA-256 of the certificate's SubjectPublicKeyInfo: it names
    /// the key, so a certificate made again for the same key keeps it.
    /// </summary>
    public static string Fingerprint(X509Certificate certificate)
    {
        ArgumentNullException.ThrowIfNull(certificate);
        if (certificate is X509Certificate2 full)
            return Fingerprint(full.PublicKey);
        using var copy = X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        return Fingerprint(copy.PublicKey);
    }

    private static string Fingerprint(PublicKey key) =>
        FingerprintPrefix + Convert.ToHexStringLower(SHA256.HashData(key.ExportSubjectPublicKeyInfo()));

    /// <summary>True when <paramref name="text"/> has the form of a fingerprint: <c>sha256:</c> and 64 lowercase hex digits.</summary>
    public static bool IsFingerprint(string? text) =>
        text is { Length: 71 } && text.StartsWith(FingerprintPrefix, StringComparison.Ordinal) &&
        !text.AsSpan(FingerprintPrefix.Length).ContainsAnyExcept("0123456789abcdef");

    /// <summary>A self-signed certificate for <paramref name="key"/>, valid from a day before <paramref name="now"/> (for clocks behind ours).</summary>
    internal static X509Certificate2 Create(ECDsa key, DateTimeOffset now)
    {
        var request = new CertificateRequest($"CN={CommonName}", key, HashAlgorithmName.SHA256);
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName(CommonName);
        request.CertificateExtensions.Add(names.Build());
        return request.CreateSelfSigned(now.AddDays(-1), now + Validity);
    }

    // On Linux SslStream cannot serve with a key made in memory until the certificate has gone through PKCS#12.
    private static X509Certificate2 Reload(X509Certificate2 certificate) =>
        X509CertificateLoader.LoadPkcs12(certificate.Export(X509ContentType.Pkcs12), null);

    private static string FullPath(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        return Path.GetFullPath(path);
    }

    private static BrokerCertificateException Fail(string path, string problem, Exception? inner = null) =>
        new(path, $"Broker certificate file '{path}' {problem}", inner);

    private static byte[] ReadOwnerOnlyFile(string path) =>
        OwnerOnlyFile.Read(path, MaxFileLength, "its private key", "It", "far more than a certificate and its key",
            (problem, inner) => Fail(path, problem, inner));

    /// <summary>
    /// Writes the certificate and key to a temporary owner-only file beside <paramref name="path"/> and moves it into
    /// place, so no reader sees half a file; false when a file appeared at <paramref name="path"/> first.
    /// </summary>
    private static bool TryCreate(string path, X509Certificate2 certificate)
    {
        var directory = Path.GetDirectoryName(path) ?? throw Fail(path, "has no parent directory.");
        var temporary = Path.Combine(directory, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        using var key = certificate.GetECDsaPrivateKey() ?? throw new InvalidOperationException("A made certificate has its ECDSA key.");
        var content = Encoding.ASCII.GetBytes(certificate.ExportCertificatePem() + "\n" + key.ExportPkcs8PrivateKeyPem() + "\n");
        try
        {
            if (OperatingSystem.IsWindows())
                Directory.CreateDirectory(directory);
            else if (!Directory.Exists(directory))
                Directory.CreateDirectory(directory, OwnerOnlyDirectory);
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
            if (!OperatingSystem.IsWindows())
                options.UnixCreateMode = OwnerReadWrite;
            using (var stream = new FileStream(temporary, options))
            {
                stream.Write(content);
                stream.Flush(flushToDisk: true);
            }
            try
            {
                File.Move(temporary, path, overwrite: false);
                return true;
            }
            catch (IOException) when (File.Exists(path))
            {
                return false;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Fail(path, $"cannot be created: {e.Message}", e);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(content);
            try
            {
                File.Delete(temporary);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Nothing more can be done; the temporary file is owner-only like the certificate's.
            }
        }
    }
}
