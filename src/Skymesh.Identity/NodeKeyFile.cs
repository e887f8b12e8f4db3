using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace Skymesh.Identity;

/// <summary>
/// The file that holds a node's identity key. The format (docs/identity.md):
/// <code>
/// skymesh-node-key 1
/// # comment lines and blank lines are ignored
/// address &lt;64 lowercase hex digits: the public address, checked against the secret&gt;
/// secret &lt;64 hex digits: the 32-byte big-endian secp256k1 secret&gt;
/// </code>
/// It is created owner-only (0600) by writing a temporary file beside it and linking it into place only if the name is
/// free, so that no reader ever sees half a key and concurrent first runs agree on one key; a file that group or others
/// may access is refused rather than used.
/// </summary>
public static class NodeKeyFile
{
    public const string Header = "skymesh-node-key 1";
    private const string HeaderWord = "skymesh-node-key";
    private const int FormatVersion = 1;

    // A real file is about 250 bytes; anything far larger is not ours and is not read into memory.
    private const int MaxFileLength = 4096;

    private const UnixFileMode OwnerReadWrite = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const UnixFileMode OwnerOnlyDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    private const string CorruptAdvice =
        "The file is corrupt: restore it from a backup (deleting it gives this node a new identity and address).";

    /// <inheritdoc cref="LoadOrCreate(string, out bool)"/>
    public static NodeKey LoadOrCreate(string path) => LoadOrCreate(path, out _);

    /// <summary>
    /// Loads the key at <paramref name="path"/>, or, when no file is there, generates a key and writes it there
    /// (creating the directory, owner-only, if needed). An existing file is never replaced, even a bad one.
    /// If another process creates the file at the same moment, both end up with the key that reached the disk first.
    /// </summary>
    /// <param name="created">True when this call generated the key.</param>
    /// <exception cref="NodeKeyFileException">The file exists but cannot be used, or cannot be created.</exception>
    public static NodeKey LoadOrCreate(string path, out bool created)
    {
        path = FullPath(path);
        if (!File.Exists(path))
        {
            var key = NodeKey.Generate();
            try
            {
                created = TryCreate(path, key);
            }
            catch
            {
                key.Dispose();
                throw;
            }
            if (created)
                return key;
            key.Dispose();
        }
        created = false;
        return Load(path);
    }

    /// <summary>Loads the key at <paramref name="path"/>.</summary>
    /// <exception cref="NodeKeyFileException">
    /// The file is missing, unreadable, accessible to group or others, corrupt, or not a Skymesh node key.
    /// </exception>
    public static NodeKey Load(string path)
    {
        path = FullPath(path);
        var content = ReadOwnerOnlyFile(path);
        try
        {
            return Parse(path, content);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(content);
        }
    }

    private static string FullPath(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        return Path.GetFullPath(path);
    }

    private static NodeKeyFileException Fail(string path, string problem, Exception? inner = null) =>
        new(path, $"Node key file '{path}' {problem}", inner);

    private static byte[] ReadOwnerOnlyFile(string path) =>
        OwnerOnlyFile.Read(path, MaxFileLength, "its secret", "A node key", "far more than a node key file; it is not a Skymesh node key",
            (problem, inner) => Fail(path, problem, inner));

    private static NodeKey Parse(string path, byte[] content)
    {
        if (content.Length == 0)
            throw Fail(path, $"is empty: it holds no key (a node key file starts with '{Header}').");

        var lines = new List<(int Start, int Length)>();
        for (int start = 0, i = 0; i <= content.Length; i++)
        {
            if (i == content.Length || content[i] == '\n')
            {
                var end = i;
                while (end > start && content[end - 1] is (byte)' ' or (byte)'\t' or (byte)'\r')
                    end--;
                lines.Add((start, end - start));
                start = i + 1;
            }
        }
        ReadOnlySpan<byte> Line(int index) => content.AsSpan(lines[index].Start, lines[index].Length);

        CheckHeader(path, content, Line(0));

        var secretLine = -1;
        var addressLine = -1;
        for (var n = 1; n < lines.Count; n++)
        {
            var line = Line(n);
            if (line.IsEmpty || line[0] == '#')
                continue;
            if (line.StartsWith("secret "u8))
            {
                if (secretLine >= 0)
                    throw Fail(path, $"has more than one secret line (lines {secretLine + 1} and {n + 1}). {CorruptAdvice}");
                secretLine = n;
            }
            else if (line.StartsWith("address "u8))
            {
                if (addressLine >= 0)
                    throw Fail(path, $"has more than one address line (lines {addressLine + 1} and {n + 1}). {CorruptAdvice}");
                addressLine = n;
            }
            else
            {
                // The line itself is not quoted: it might be a secret pasted without its "secret " prefix.
                throw Fail(path, $"has a line {n + 1} that is neither 'address …', 'secret …', a comment nor blank. {CorruptAdvice}");
            }
        }
        if (secretLine < 0)
            throw Fail(path, $"has no 'secret' line. {CorruptAdvice}");

        var key = ParseSecret(path, Line(secretLine)["secret "u8.Length..].TrimStart(" \t"u8), secretLine + 1);
        if (addressLine >= 0)
            CheckAddress(path, key, Line(addressLine)["address "u8.Length..].TrimStart(" \t"u8), addressLine + 1);
        return key;
    }

    private static void CheckHeader(string path, byte[] content, ReadOnlySpan<byte> first)
    {
        if (first.SequenceEqual(Encoding.ASCII.GetBytes(Header)))
        {
            // A header alone is not enough: the rest must be text too.
            if (IsBinary(content))
                throw Fail(path, $"contains bytes that are not text. {CorruptAdvice}");
            return;
        }
        if (IsBinary(content))
            throw Fail(path, "is not a text file; it is not a Skymesh node key.");
        if (first.StartsWith("-----BEGIN OPENSSH PRIVATE KEY-----"u8) || first.StartsWith("PuTTY-User-Key-File"u8))
            throw Fail(path, "is an SSH private key, not a Skymesh node key.");
        if (first.StartsWith("-----BEGIN "u8))
        {
            var label = PemLabel(first);
            throw Fail(path, $"is a PEM file{(label is null ? "" : $" ({label})")}, not a Skymesh node key. " +
                $"A node key file starts with '{Header}'.");
        }
        if (first.StartsWith("ssh-"u8) || first.StartsWith("ecdsa-sha2-"u8) || first.StartsWith("sk-ssh-"u8) || first.StartsWith("sk-ecdsa-"u8))
            throw Fail(path, "is an SSH public key, not a Skymesh node key.");
        if (first.StartsWith(Encoding.ASCII.GetBytes(HeaderWord + " ")))
        {
            var version = first[(HeaderWord.Length + 1)..];
            if (System.Buffers.Text.Utf8Parser.TryParse(version, out int number, out var consumed) && consumed == version.Length && number > FormatVersion)
                throw Fail(path, $"is in format version {number}, written by a newer Skymesh; this version reads format {FormatVersion}.");
            throw Fail(path, $"has a bad first line; expected '{Header}'. {CorruptAdvice}");
        }
        throw Fail(path, $"does not start with '{Header}'; it is not a Skymesh node key.");
    }

    /// <summary>"-----BEGIN EC PRIVATE KEY-----" → "EC PRIVATE KEY"; null when the line is not that shape.</summary>
    private static string? PemLabel(ReadOnlySpan<byte> line)
    {
        var rest = line["-----BEGIN "u8.Length..];
        var end = rest.IndexOf("-----"u8);
        if (end <= 0 || end > 40)
            return null;
        foreach (var b in rest[..end])
        {
            if (b is not ((>= (byte)'A' and <= (byte)'Z') or (>= (byte)'0' and <= (byte)'9') or (byte)' '))
                return null;
        }
        return Encoding.ASCII.GetString(rest[..end]);
    }

    private static bool IsBinary(ReadOnlySpan<byte> content)
    {
        foreach (var b in content)
        {
            if (b < 0x20 && b is not ((byte)'\n' or (byte)'\r' or (byte)'\t'))
                return true;
        }
        return false;
    }

    private static NodeKey ParseSecret(string path, ReadOnlySpan<byte> digits, int lineNumber)
    {
        // Problems are described by position and length only: the digits are (part of) a secret.
        if (digits.Length != 2 * NodeKey.SecretLength)
            throw Fail(path, $"has a secret of {digits.Length} characters on line {lineNumber}; a secret is {2 * NodeKey.SecretLength} hex digits. {CorruptAdvice}");
        Span<byte> secret = stackalloc byte[NodeKey.SecretLength];
        try
        {
            var bad = Hex.Decode(digits, secret);
            if (bad >= 0)
                throw Fail(path, $"has a secret on line {lineNumber} whose character {bad + 1} is not a hex digit. {CorruptAdvice}");
            try
            {
                return NodeKey.FromSecret(secret);
            }
            catch (ArgumentException e)
            {
                throw Fail(path, $"holds an invalid secret: it is zero or not below the secp256k1 group order. {CorruptAdvice}", e);
            }
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
    }

    private static void CheckAddress(string path, NodeKey key, ReadOnlySpan<byte> digits, int lineNumber)
    {
        Span<char> text = stackalloc char[NodeAddress.TextLength];
        var matches = digits.Length == NodeAddress.TextLength;
        if (matches)
        {
            for (var i = 0; i < digits.Length; i++)
                text[i] = (char)digits[i];
            matches = NodeAddress.TryParse(text, out var address) && address == key.Address;
        }
        if (!matches)
        {
            key.Dispose();
            throw Fail(path, $"has an address on line {lineNumber} that is not the address of its secret ({key.Address}). {CorruptAdvice}");
        }
    }

    /// <summary>Writes the key to a new owner-only file; false when a file appeared at <paramref name="path"/> first.</summary>
    private static bool TryCreate(string path, NodeKey key)
    {
        var directory = Path.GetDirectoryName(path) ?? throw Fail(path, "has no parent directory.");
        var temporary = Path.Combine(directory, $".{Path.GetFileName(path)}.{Guid.NewGuid():N}.tmp");
        var content = Format(key);
        try
        {
            if (OperatingSystem.IsWindows())
                Directory.CreateDirectory(directory);
            else
                Directory.CreateDirectory(directory, OwnerOnlyDirectory);

            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
            if (!OperatingSystem.IsWindows())
                options.UnixCreateMode = OwnerReadWrite;
            using (var stream = new FileStream(temporary, options))
            {
                stream.Write(content);
                stream.Flush(flushToDisk: true);
            }
            // Publish the complete file under its name only if no file is there: a file that appeared meanwhile
            // (another process's or thread's key) wins and is loaded instead.
            return Publish(temporary, path);
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
                // Nothing more can be done; the temporary file is owner-only like the key itself.
            }
        }
    }

    /// <summary>
    /// Gives <paramref name="temporary"/> the name <paramref name="path"/> unless a file already has it, in one
    /// atomic step; false when one had. On Unix, File.Move without overwrite is not such a step: it checks that
    /// the target is absent and then calls rename(2), which replaces a file created in between, so two first
    /// runs at once could each install their own key and each report it as created. link(2) gives the complete
    /// file its name only if the name is free, failing with EEXIST otherwise. On Windows, File.Move without
    /// overwrite (MoveFileEx without MOVEFILE_REPLACE_EXISTING) is already atomic.
    /// </summary>
    private static bool Publish(string temporary, string path)
    {
        if (!OperatingSystem.IsWindows())
        {
            if (NativeMethods.Link(temporary, path) == 0)
                return true;
            if (File.Exists(path) || Directory.Exists(path))
                return false;
            // link(2) failed and nothing has the name: a file system without hard links, or a real error, which
            // the move below reports in .NET's words. Without hard links, the move is the best there is.
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

    private static class NativeMethods
    {
        // "libc" is the C library on every Unix .NET runs on (the runtime maps the name to libc.so.6 on Linux).
        [DllImport("libc", EntryPoint = "link", SetLastError = true)]
        [DefaultDllImportSearchPaths(DllImportSearchPath.SafeDirectories)]
        public static extern int Link([MarshalAs(UnmanagedType.LPUTF8Str)] string existing, [MarshalAs(UnmanagedType.LPUTF8Str)] string created);
    }

    private static byte[] Format(NodeKey key)
    {
        var text = new StringBuilder()
            .Append(Header).Append('\n')
            .Append("# Skymesh node identity. Anyone who can read this file can act as this node:\n")
            .Append("# keep it readable by its owner only (chmod 600), and back it up to keep the address.\n")
            .Append("address ").Append(key.Address.ToString()).Append('\n')
            .Append("secret ")
            .ToString();
        var prefixLength = Encoding.ASCII.GetByteCount(text);
        var content = new byte[prefixLength + 2 * NodeKey.SecretLength + 1];
        Encoding.ASCII.GetBytes(text, content);
        Span<byte> secret = stackalloc byte[NodeKey.SecretLength];
        try
        {
            key.WriteSecret(secret);
            Hex.EncodeLower(secret, content.AsSpan(prefixLength));
        }
        finally
        {
            CryptographicOperations.ZeroMemory(secret);
        }
        content[^1] = (byte)'\n';
        return content;
    }
}
