using Microsoft.Win32.SafeHandles;

namespace Skymesh.Identity;

/// <summary>Reads files that hold secrets (node keys, a broker's private key): refused unless only their owner may read them.</summary>
public static class OwnerOnlyFile
{
    /// <summary>Mode bits that let anyone but the owner at the file.</summary>
    public const UnixFileMode GroupOrOthers =
        UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute |
        UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    /// <summary>
    /// The whole of the file at <paramref name="path"/>, at most <paramref name="maxLength"/> bytes. Every problem — a
    /// directory, a mode that lets others in, too long, missing, unreadable — is thrown as <paramref name="fail"/> makes
    /// it from the problem in words (after the path) and the cause.
    /// </summary>
    /// <param name="secret">What may have leaked when others can read it, e.g. "its secret".</param>
    /// <param name="subject">What must be readable by its owner only, e.g. "A node key".</param>
    /// <param name="tooLong">Why a file over <paramref name="maxLength"/> is not one, e.g. "far more than a node key file".</param>
    public static byte[] Read(string path, int maxLength, string secret, string subject, string tooLong, Func<string, Exception?, Exception> fail)
    {
        if (Directory.Exists(path))
            throw fail("is a directory, not a file.", null);
        try
        {
            using var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            // Checked on the open handle, so the mode is that of the very file being read.
            if (!OperatingSystem.IsWindows())
            {
                var mode = File.GetUnixFileMode(handle);
                if ((mode & GroupOrOthers) != 0)
                    throw fail(
                        $"can be accessed by group or others (mode {Convert.ToString((int)mode, 8).PadLeft(4, '0')}), so {secret} may have leaked. " +
                        $"{subject} must be readable by its owner only; fix it with: chmod 600 '{path}'", null);
            }
            var length = RandomAccess.GetLength(handle);
            if (length > maxLength)
                throw fail($"is {length:N0} bytes long, {tooLong}.", null);
            return ReadAll(handle, (int)length);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw fail("does not exist.", e);
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            throw fail($"cannot be read: {e.Message}", e);
        }
    }

    private static byte[] ReadAll(SafeFileHandle handle, int length)
    {
        var content = new byte[length];
        var read = 0;
        while (read < length)
        {
            var n = RandomAccess.Read(handle, content.AsSpan(read), read);
            if (n == 0)
                break;
            read += n;
        }
        return read == length ? content : content[..read];
    }
}
