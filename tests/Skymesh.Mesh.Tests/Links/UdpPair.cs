using System.Net;
using Skymesh.Identity;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;

namespace Skymesh.Mesh.Tests.Links;

/// <summary>Two switches on real loopback UDP with a link up between them, as both sides see it.</summary>
internal sealed class UdpPair : IAsyncDisposable
{
    private readonly NodeKey _ka;
    private readonly NodeKey _kb;

    private UdpPair(NodeKey ka, NodeKey kb, MeshSwitch a, MeshSwitch b, UdpInterface bNic)
    {
        _ka = ka;
        _kb = kb;
        A = a;
        B = b;
        BNic = bNic;
    }

    public MeshSwitch A { get; }

    public MeshSwitch B { get; }

    public UdpInterface BNic { get; }

    /// <summary>The link at A (towards B) and at B (towards A).</summary>
    public Link AtoB { get; private set; } = null!;

    public Link BtoA { get; private set; } = null!;

    public static async Task<UdpPair> LinkAsync(CancellationToken cancellationToken)
    {
        var ka = NodeKey.Generate();
        var kb = NodeKey.Generate();
        var pair = new UdpPair(ka, kb, new MeshSwitch(ka), new MeshSwitch(kb), new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0)));
        var aNic = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
        pair.A.AddInterface(aNic);
        pair.B.AddInterface(pair.BNic);
        var bIn = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
        pair.B.LinkUp += l => bIn.TrySetResult(l);
        pair.AtoB = await pair.A.ConnectAsync(aNic, pair.BNic.LocalEndPoint, kb.Address, cancellationToken).WaitAsync(TimeSpan.FromSeconds(10), cancellationToken);
        pair.BtoA = await bIn.Task.WaitAsync(TimeSpan.FromSeconds(10), cancellationToken);
        return pair;
    }

    public async ValueTask DisposeAsync()
    {
        await A.DisposeAsync();
        await B.DisposeAsync();
        _ka.Dispose();
        _kb.Dispose();
    }
}
