using System.Globalization;

namespace Skymesh.Mesh.Paths;

/// <summary>The path stopped answering: nothing was acknowledged (or heard) for the failure timeout.</summary>
public sealed class PathBrokenException : IOException
{
    public PathBrokenException()
        : base("path lost")
    {
    }

    public PathBrokenException(string message)
        : base(message)
    {
    }

    public PathBrokenException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public PathBrokenException(string peer, TimeSpan silence)
        : base(string.Create(CultureInfo.InvariantCulture, $"path to {peer} lost: no acknowledgement for {silence.TotalSeconds:0.###} s"))
    {
        Peer = peer;
        Silence = silence;
    }

    public string? Peer { get; }

    public TimeSpan Silence { get; }
}

/// <summary>A stream was abandoned, by the peer or by this side, before it ended gracefully.</summary>
public sealed class StreamAbortedException : IOException
{
    public StreamAbortedException()
        : base("stream aborted")
    {
    }

    public StreamAbortedException(string message)
        : base(message)
    {
    }

    public StreamAbortedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public StreamAbortedException(uint streamId, bool byPeer, StreamCloseCode code, string reason)
        : base(Describe(streamId, byPeer, code, reason))
    {
        StreamId = streamId;
        ByPeer = byPeer;
        Code = code;
        Reason = reason;
    }

    public uint StreamId { get; }

    public bool ByPeer { get; }

    public StreamCloseCode Code { get; }

    public string Reason { get; } = "";

    private static string Describe(uint streamId, bool byPeer, StreamCloseCode code, string reason)
    {
        var who = byPeer ? "by the peer" : "locally";
        var why = reason.Length > 0 ? reason : code.ToString();
        return string.Create(CultureInfo.InvariantCulture, $"stream {streamId} aborted {who}: {why}");
    }
}
