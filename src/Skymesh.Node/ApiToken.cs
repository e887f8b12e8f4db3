using System.Security.Cryptography;

namespace Skymesh.Node;

/// <summary>
/// The secret that lets its owner, and nobody else, drive a node's local API (docs/node.md, "The local API").
/// It is made at the node's first start — 32 random bytes as 64 hex digits — in <c>api.token</c> in the data
/// directory, readable by the node's user only, and published while the node runs under the user's own state
/// directory (<c>~/.local/share/skymesh/api/api-PORT.token</c>, a directory only that user can enter), so that
/// <c>skymesh … --api HOST:PORT</c> run by the same user finds it without being told. Other users, and web pages
/// the user visits, cannot read either file.
/// </summary>
public static class ApiToken
{
    public const string FileName = "api.token";

    /// <summary>The HTTP header that carries it: <c>Authorization: Bearer TOKEN</c>.</summary>
    public const string Scheme = "Bearer";

    private const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>Where running nodes publish their tokens for the CLI of the same user.</summary>
    public static string RegistryDirectory =>
        Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData, Environment.SpecialFolderOption.Create), "skymesh", "api");

    /// <summary>Reads the node's token, creating it (atomically, owner-only) at the first start.</summary>
    public static string LoadOrCreate(string dataDirectory)
    {
        ArgumentException.ThrowIfNullOrEmpty(dataDirectory);
        var path = Path.Combine(dataDirectory, FileName);
        if (TryRead(path) is { } existing)
            return existing;
        var token = Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32));
        WriteOwnerOnly(path, token);
        // Two nodes starting on one data directory at once: whichever name got there first is the token.
        return TryRead(path) ?? throw new IOException($"{path} could not be read back after it was written.");
    }

    /// <summary>Publishes the token of a node whose API listens on <paramref name="port"/>.</summary>
    public static void Publish(int port, string token)
    {
        var directory = RegistryDirectory;
        if (OperatingSystem.IsWindows())
            Directory.CreateDirectory(directory);
        else
            Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var path = Path.Combine(directory, $"api-{port}.token");
        File.Delete(path);
        WriteOwnerOnly(path, token);
    }

    /// <summary>Takes a stopped node's published token away, if it is still the one published.</summary>
    public static void Withdraw(int port, string token)
    {
        var path = Path.Combine(RegistryDirectory, $"api-{port}.token");
        try
        {
            if (TryRead(path) == token)
                File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A leftover file holds a token nobody accepts any more.
        }
    }

    /// <summary>
    /// The token for the API at <paramref name="address"/> (<c>host:port</c>): from <paramref name="dataDirectory"/>
    /// when given, else as published by the node listening on that port; null when neither has it.
    /// </summary>
    public static string? Find(string address, string? dataDirectory = null)
    {
        if (dataDirectory is not null)
            return TryRead(Path.Combine(dataDirectory, FileName));
        var colon = address.LastIndexOf(':');
        if (colon < 0 || !int.TryParse(address.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port))
            return null;
        return TryRead(Path.Combine(RegistryDirectory, $"api-{port}.token"));
    }

    /// <summary>Compares a presented token with the node's without leaking, through timing, how much of it matched.</summary>
    public static bool Matches(ReadOnlySpan<char> presented, string token) =>
        presented.Length == token.Length
        && CryptographicOperations.FixedTimeEquals(System.Runtime.InteropServices.MemoryMarshal.AsBytes(presented), System.Runtime.InteropServices.MemoryMarshal.AsBytes(token.AsSpan()));

    private static string? TryRead(string path)
    {
        try
        {
            var text = File.ReadAllText(path).Trim();
            return text.Length == 64 && text.All(char.IsAsciiHexDigitLower) ? text : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Writes a new file that only its owner can read, never replacing one that exists.</summary>
    private static void WriteOwnerOnly(string path, string text)
    {
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = OwnerOnly;
        try
        {
            using var stream = new FileStream(path, options);
            using var writer = new StreamWriter(stream);
            writer.Write(text);
            writer.Write('\n');
        }
        catch (IOException) when (File.Exists(path))
        {
            // Created by someone else meanwhile: theirs stands.
        }
    }
}
