namespace Skymesh.Identity;

/// <summary>
/// A node key file that cannot be used. The message names the file and the problem (and how to fix it where there is a
/// fix); it never contains the secret, so it can be shown and logged as it is.
/// </summary>
public sealed class NodeKeyFileException : Exception
{
    public NodeKeyFileException()
    {
        Path = "";
    }

    public NodeKeyFileException(string message)
        : base(message)
    {
        Path = "";
    }

    public NodeKeyFileException(string message, Exception? innerException)
        : base(message, innerException)
    {
        Path = "";
    }

    public NodeKeyFileException(string path, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Path = path;
    }

    /// <summary>The full path of the file.</summary>
    public string Path { get; }
}
