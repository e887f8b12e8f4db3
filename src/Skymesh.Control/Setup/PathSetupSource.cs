using System.Security.Cryptography;
using Skymesh.Identity;

namespace Skymesh.Control.Setup;

/// <summary>How a control agent calls another node's agent (over SSMP RPC in a node; directly in a simulator).</summary>
public interface IControlCaller
{
    /// <summary>Calls <paramref name="method"/> at <paramref name="to"/>; a refusal throws with the far side's status and reason.</summary>
    Task<ReadOnlyMemory<byte>> CallAsync(NodeAddress to, string method, ReadOnlyMemory<byte> body, CancellationToken cancellationToken);
}

/// <summary>The RPC methods of path setup.</summary>
public static class SetupMethods
{
    public const string Reserve = "path-reserve";
    public const string Commit = "path-commit";
    public const string Release = "path-release";

    /// <summary>A hop tells the source that a link under its path went down: <c>path id(16) | node(32) | node(32)</c>.</summary>
    public const string Broken = "path-broken";
}

/// <summary>Path setup failed; <see cref="Failures"/> says which hop refused what.</summary>
public sealed class PathSetupException : Exception
{
    public PathSetupException()
    {
    }

    public PathSetupException(string message)
        : base(message)
    {
    }

    public PathSetupException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    public PathSetupException(string phase, IReadOnlyList<(NodeAddress Hop, string Error)> failures)
        : base($"path setup failed at {phase}: {string.Join("; ", failures.Select(f => $"{f.Hop}: {f.Error}"))}")
    {
        Failures = failures;
    }

    public IReadOnlyList<(NodeAddress Hop, string Error)> Failures { get; } = [];
}

/// <summary>A path that is set up, from the source's side.</summary>
public sealed record EstablishedPath(SetupRequest Request, int Link, uint InLabel, uint OutLabel, TimeSpan SetupTime)
{
    /// <summary>The labels each hop after the source chose (in the order of <see cref="SetupRequest.Nodes"/>, from the second).</summary>
    public IReadOnlyList<HopLabels> Hops { get; init; } = [];
}

/// <summary>
/// The source's side of path setup: one signature, then two parallel rounds to every hop — reserve (each
/// hop checks the request and picks its labels), commit (each hop learns its neighbours' labels) — and on
/// any refusal or timeout a release to every hop, so nothing stays reserved.
/// </summary>
public sealed class PathSetupSource(NodeKey key, IHopTable table, IControlCaller caller, TimeProvider? time = null)
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;

    /// <summary>How long a request may be acted on.</summary>
    public TimeSpan RequestLifetime { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Where path ids and nonces come from: null (the default) for the operating system's cryptographic generator; a
    /// seeded source only in simulations, whose runs must repeat.
    /// </summary>
    public Random? Random { get; init; }

    /// <summary>Sets up a path through <paramref name="nodes"/> (this node first, the destination last).</summary>
    /// <param name="replaces">The path this one repairs (its ends move onto the new one, keeping its nonce), or null.</param>
    public async Task<EstablishedPath> SetupAsync(IReadOnlyList<NodeAddress> nodes, uint maxPricePerHop, CancellationToken cancellationToken, SetupRequest? replaces = null)
    {
        ArgumentNullException.ThrowIfNull(nodes);
        var started = _time.GetTimestamp();
        var nonce = replaces?.Nonce ?? NewBytes(32);
        var request = SetupRequest.Create(key, new Guid(NewBytes(16)), _time.GetUtcNow(), RequestLifetime, maxPricePerHop, nonce, nodes, replaces?.PathId ?? Guid.Empty);
        var link = table.LinkTo(nodes[1]) ?? throw new PathSetupException("reserve", [(nodes[1], "this node has no link to the first hop")]);
        var backIn = table.Reserve(link, RequestLifetime);
        var hops = nodes.Skip(1).ToArray();

        var reserved = await Task.WhenAll(hops.Select(hop => TryCall(hop, SetupMethods.Reserve, request.Bytes, cancellationToken)));
        var refusals = reserved.Select((r, i) => (hops[i], r.Error)).Where(r => r.Error is not null).ToList();
        if (refusals.Count > 0)
        {
            await ReleaseAsync(request, link, backIn, CancellationToken.None);
            throw new PathSetupException("reserve", refusals!);
        }
        var labels = reserved.Select(r => HopLabels.Parse(r.Answer.Span)).ToArray();

        var commits = hops.Select((hop, i) =>
        {
            var forwardOut = i + 1 < labels.Length ? labels[i + 1].ForwardIn : 0;
            var backOut = i == 0 ? backIn : labels[i - 1].BackIn;
            return TryCall(hop, SetupMethods.Commit, new CommitMessage(request.PathId, forwardOut, backOut).ToBytes(), cancellationToken);
        });
        var committed = await Task.WhenAll(commits);
        refusals = committed.Select((r, i) => (hops[i], r.Error)).Where(r => r.Error is not null).ToList();
        if (refusals.Count > 0)
        {
            await ReleaseAsync(request, link, backIn, CancellationToken.None);
            throw new PathSetupException("commit", refusals!);
        }
        table.InstallEnd(request, link, backIn, labels[0].ForwardIn);
        return new EstablishedPath(request, link, backIn, labels[0].ForwardIn, _time.GetElapsedTime(started)) { Hops = labels };
    }

    private byte[] NewBytes(int count)
    {
        if (Random is not { } random)
            return RandomNumberGenerator.GetBytes(count);
        var bytes = new byte[count];
        lock (random)
            random.NextBytes(bytes);
        return bytes;
    }

    /// <summary>Tears a path down at every hop (best effort: entries left behind expire without traffic).</summary>
    public async Task CloseAsync(EstablishedPath path, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(path);
        await ReleaseAsync(path.Request, path.Link, path.InLabel, cancellationToken);
    }

    private async Task ReleaseAsync(SetupRequest request, int link, uint backIn, CancellationToken cancellationToken)
    {
        table.Remove(link, backIn);
        await ReleaseHopsAsync(request, cancellationToken);
    }

    /// <summary>Asks every hop of a path to release it (after a repair moved its ends elsewhere); best effort.</summary>
    public async Task ReleaseHopsAsync(SetupRequest request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        var id = request.PathId.ToByteArray(bigEndian: true);
        await Task.WhenAll(request.Nodes.Skip(1).Select(hop => TryCall(hop, SetupMethods.Release, id, cancellationToken)));
    }

    private async Task<(ReadOnlyMemory<byte> Answer, string? Error)> TryCall(NodeAddress hop, string method, ReadOnlyMemory<byte> body, CancellationToken cancellationToken)
    {
        try
        {
            return (await caller.CallAsync(hop, method, body, cancellationToken), null);
        }
        catch (Exception e) when (e is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            return (default, e.Message);
        }
    }

}
