using Skymesh.Identity;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Control.Setup;

/// <summary>Calls other nodes' control agents over SSMP RPC: a node's SSMP id is its address.</summary>
public sealed class SsmpControlCaller(SsmpPeer peer, SsmpCallOptions? options = null) : IControlCaller
{
    private readonly SsmpCallOptions _options = options ?? new SsmpCallOptions { AttemptTimeout = TimeSpan.FromSeconds(1), Attempts = 3 };

    public async Task<ReadOnlyMemory<byte>> CallAsync(NodeAddress to, string method, ReadOnlyMemory<byte> body, CancellationToken cancellationToken) =>
        await peer.CallAsync(to.ToString(), method, body, _options, cancellationToken);
}

/// <summary>Serves a node's side of path setup over SSMP RPC (reserve, commit, release).</summary>
public static class SsmpSetupService
{
    public static void Register(SsmpPeer peer, PathSetupHop hop)
    {
        ArgumentNullException.ThrowIfNull(peer);
        ArgumentNullException.ThrowIfNull(hop);
        peer.Handle(SetupMethods.Reserve, (request, _) => Run(request, from => hop.Reserve(from, request.Body.Span).ToBytes()));
        peer.Handle(SetupMethods.Commit, (request, _) => Run(request, from =>
        {
            hop.Commit(from, Parse(request.Body.Span, CommitMessage.Parse));
            return [];
        }));
        peer.Handle(SetupMethods.Release, (request, _) => Run(request, from =>
        {
            if (request.Body.Length != 16)
                throw new SsmpRpcException(SsmpRpcException.BadRequest, "a release names a 16-byte path id");
            hop.Release(from, new Guid(request.Body.Span, bigEndian: true));
            return [];
        }));
    }

    private static ValueTask<ReadOnlyMemory<byte>> Run(SsmpRpcRequest request, Func<NodeAddress, byte[]> step)
    {
        // The caller's SSMP id is its node address; under the broker's `key` login the broker has proven it.
        if (!NodeAddress.TryParse(request.From, out var from))
            throw new SsmpRpcException(403, "path setup is for nodes logged in under their address");
        try
        {
            return ValueTask.FromResult<ReadOnlyMemory<byte>>(step(from));
        }
        catch (SetupRefusedException e)
        {
            throw new SsmpRpcException(e.Status, e.Message);
        }
    }

    private static T Parse<T>(ReadOnlySpan<byte> body, SpanParser<T> parse)
    {
        try
        {
            return parse(body);
        }
        catch (FormatException e)
        {
            throw new SsmpRpcException(SsmpRpcException.BadRequest, e.Message);
        }
    }

    private delegate T SpanParser<T>(ReadOnlySpan<byte> body);
}
