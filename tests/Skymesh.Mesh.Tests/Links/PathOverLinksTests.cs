using System.Net;
using System.Security.Cryptography;
using Skymesh.Identity;
using Skymesh.Mesh.Forwarding;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Links;
using Skymesh.Mesh.Paths;

namespace Skymesh.Mesh.Tests.Links;

public sealed class PathOverLinksTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task A_reliable_stream_crosses_a_label_switched_path_over_real_udp_links()
    {
        using var ka = NodeKey.Generate();
        using var kb = NodeKey.Generate();
        using var kc = NodeKey.Generate();
        await using var a = new MeshSwitch(ka);
        await using var b = new MeshSwitch(kb);
        await using var c = new MeshSwitch(kc);
        var aNic = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
        var bNic = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
        var cNic = new UdpInterface(new IPEndPoint(IPAddress.Loopback, 0));
        a.AddInterface(aNic);
        b.AddInterface(bNic);
        c.AddInterface(cNic);
        var bFromA = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
        var cFromB = new TaskCompletionSource<Link>(TaskCreationOptions.RunContinuationsAsynchronously);
        b.LinkUp += l => { if (l.Peer == ka.Address) bFromA.TrySetResult(l); };
        c.LinkUp += l => cFromB.TrySetResult(l);
        var ab = await a.ConnectAsync(aNic, bNic.LocalEndPoint, kb.Address, Ct).WaitAsync(TimeSpan.FromSeconds(10), Ct);
        var bc = await b.ConnectAsync(bNic, cNic.LocalEndPoint, kc.Address, Ct).WaitAsync(TimeSpan.FromSeconds(10), Ct);
        var ba = await bFromA.Task.WaitAsync(TimeSpan.FromSeconds(10), Ct);
        var cb = await cFromB.Task.WaitAsync(TimeSpan.FromSeconds(10), Ct);

        // Forward direction A -(5)-> B -(9)-> C; return direction C -(7)-> B -(3)-> A.
        var atA = new LinkPathChannel(ab, 5);
        var atC = new LinkPathChannel(cb, 7);
        a.Labels.Install(ab.Id, 3, LabelAction.Deliver(a.RegisterSink(atA)));
        c.Labels.Install(cb.Id, 9, LabelAction.Deliver(c.RegisterSink(atC)));
        b.Labels.Install(ba.Id, 5, LabelAction.Forward(bc.Id, 9));
        b.Labels.Install(bc.Id, 7, LabelAction.Forward(ba.Id, 3));
        await using var source = new PathEndpoint(atA, new PathEndpointOptions { PeerName = "c" });
        await using var destination = new PathEndpoint(atC, new PathEndpointOptions { IsInitiator = false, PeerName = "a" });
        atA.Endpoint = source;
        atC.Endpoint = destination;

        var data = new byte[4 * 1024 * 1024];
        new Random(4).NextBytes(data);
        var sender = source.OpenStream();
        var writing = Task.Run(async () =>
        {
            await sender.WriteAsync(data, Ct);
            await sender.CompleteAsync();
        }, Ct);
        var receiver = await destination.AcceptStreamAsync(Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(30), Ct);
        var received = new MemoryStream();
        var buffer = new byte[64 * 1024];
        int n;
        while ((n = await receiver.ReadAsync(buffer, Ct).AsTask().WaitAsync(TimeSpan.FromSeconds(30), Ct)) > 0)
            received.Write(buffer, 0, n);
        await writing.WaitAsync(TimeSpan.FromSeconds(30), Ct);
        Assert.Equal(SHA256.HashData(data), SHA256.HashData(received.ToArray()));
        // Every data message crossed B by label switching.
        Assert.True(b.Forwarded > data.Length / 65_536);
    }
}
