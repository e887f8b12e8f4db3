namespace Skymesh.Ssmp.Broker;

/// <summary>
/// A broker certificate file that cannot be used. The message names the file and the problem (and how to fix it where
/// there is a fix); it never contains the key, so it can be shown and logged as it is.
/// </summary>
public sealed class BrokerCertificateException : Exception
{
    public BrokerCertificateException()
    {
        Path = "";
    }

    public BrokerCertificateException(string message)
        : base(message)
    {
        Path = "";
    }

    public BrokerCertificateException(string message, Exception? innerException)
        : base(message, innerException)
    {
        Path = "";
    }

    public BrokerCertificateException(string path, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        Path = path;
    }

    /// <summary>The full path of the file.</summary>
    public string Path { get; }
}
