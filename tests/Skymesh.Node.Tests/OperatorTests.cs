using System.Net;
using Skymesh.Mesh.Apps;

namespace Skymesh.Node.Tests;

/// <summary>
/// What a node's owner does through the local API (the same calls the dashboard and the CLI make): blocking nodes,
/// taking interfaces down, allowing an exit port someone asked for — and that it holds across a restart.
/// </summary>
public sealed class OperatorTests
{
    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_blocked_node_loses_its_link_cannot_link_again_and_stays_blocked_after_a_restart()
    {
        var owner = await TestNode.StartAsync();
        await using var other = await TestNode.StartAsync();
        try
        {
            await other.LinkToAsync(owner).WaitAsync(Bound, Ct);
            var down = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            owner.Node.Switch.LinkDown += (link, _) =>
            {
                if (link.Peer == other.Node.Address)
                    down.TrySetResult();
            };

            Assert.Equal([other.Address], await owner.Client.BlockAsync(other.Address, Ct));
            await down.Task.WaitAsync(Bound, Ct);
            Assert.Null(owner.Node.FindLink(other.Node.Address));
            // Its Hellos go unanswered: the attempt times out, and each was counted.
            await Assert.ThrowsAnyAsync<Exception>(() => other.LinkToAsync(owner));
            Assert.True(owner.Node.Switch.NeighboursRefused > 0);

            // What the owner decided is kept, for the owner's eyes only, and holds after a restart.
            var file = Path.Combine(owner.DataDirectory, Operator.OperatorState.FileName);
            if (!OperatingSystem.IsWindows())
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
            await owner.StopAsync();
            owner = await TestNode.StartAsync(dir: owner.DataDirectory);
            Assert.Contains(other.Address, await owner.Client.BlocksAsync(Ct));
            await Assert.ThrowsAnyAsync<Exception>(() => other.LinkToAsync(owner));

            await owner.Client.UnblockAsync(other.Address, Ct);
            await owner.LinkToAsync(other).WaitAsync(Bound, Ct);
            var error = await Assert.ThrowsAsync<NodeApiException>(() => owner.Client.UnblockAsync(other.Address, Ct));
            Assert.Equal(HttpStatusCode.NotFound, error.Status);
        }
        finally
        {
            await owner.DisposeAsync();
        }
    }

    [Fact]
    public async Task An_interface_taken_down_drops_its_links_and_links_again_only_once_it_is_up()
    {
        await using var owner = await TestNode.StartAsync();
        await using var other = await TestNode.StartAsync();
        await other.LinkToAsync(owner).WaitAsync(Bound, Ct);
        var nic = owner.Node.Interfaces.Keys.First();

        var down = await owner.Client.SetInterfaceAsync(nic, up: false, Ct);
        Assert.False(down.Up);
        Assert.Null(owner.Node.FindLink(other.Node.Address));
        Assert.False((await owner.Client.InterfacesAsync(Ct)).Single().Up);
        // Nothing comes in or goes out on it, and its port stays the node's.
        await Assert.ThrowsAnyAsync<Exception>(() => other.LinkToAsync(owner));
        Assert.True(owner.Node.Switch.FramesOnDownInterfaces > 0);
        var refused = await Assert.ThrowsAsync<NodeApiException>(() => owner.Client.ConnectAsync(nic, other.UdpEndPoint.ToString(), other.Address, Ct));
        Assert.Contains("down", refused.Message, StringComparison.Ordinal);

        Assert.True((await owner.Client.SetInterfaceAsync(nic, up: true, Ct)).Up);
        await other.LinkToAsync(owner).WaitAsync(Bound, Ct);
        var missing = await Assert.ThrowsAsync<NodeApiException>(() => owner.Client.SetInterfaceAsync("no-such", up: false, Ct));
        Assert.Equal(HttpStatusCode.NotFound, missing.Status);
    }

    [Fact]
    public async Task A_destination_the_exit_refuses_waits_for_the_owner_and_allowing_its_port_lets_the_next_try_through()
    {
        await using var chain = await Chain.StartAsync(2);
        var exit = chain.Destination;
        await using var echo = TcpTarget.Echo();
        await exit.Client.SetSettingsAsync(new SettingsRequest(null, null, []), Ct);
        await exit.Client.SetPoliciesAsync(new PoliciesRequest(null, null, "ask", null, null), Ct);

        // Refused, with the reason: the owner is asked.
        var refused = await Assert.ThrowsAsync<ServiceRefusedException>(() => chain.Source.Node.OpenAsync(exit.Node.Address, echo.Target, Ct));
        Assert.Contains("owner is asked", refused.Message, StringComparison.Ordinal);
        var asked = Assert.Single((await exit.Client.DecisionsAsync(Ct)).Pending);
        Assert.Equal("exit", asked.Kind);
        Assert.Equal(chain.Source.Address, asked.Peer);

        // A wrong answer is refused with the ones it takes; then the owner allows the port.
        var wrong = await Assert.ThrowsAsync<NodeApiException>(() => exit.Client.DecideAsync(asked.Id, "accept", cancellationToken: Ct));
        Assert.Contains("allow-port", wrong.Message, StringComparison.Ordinal);
        var taken = await exit.Client.DecideAsync(asked.Id, "allow-port", cancellationToken: Ct);
        Assert.Equal("person", taken.By);
        Assert.Contains($"*:{echo.EndPoint.Port}", (await exit.Client.SettingsAsync(Ct)).Exits);
        await using var stream = (await chain.Source.Node.OpenAsync(exit.Node.Address, echo.Target, Ct)).AsStream();
        await stream.WriteAsync("hello"u8.ToArray(), Ct);
        var back = new byte[5];
        await stream.ReadExactlyAsync(back, Ct);
        Assert.Equal("hello"u8.ToArray(), back);
        var again = await Assert.ThrowsAsync<NodeApiException>(() => exit.Client.DecideAsync(asked.Id, "refuse", cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.NotFound, again.Status);
    }
}

/// <summary>A path dearer than the owner's cap: asked, paid when the owner says so, refused when the policy is "cheaper" and there is none.</summary>
public sealed class PriceDecisionTests : MeshWithBroker
{
    [Fact]
    public async Task A_path_over_the_price_cap_waits_for_the_owner_and_opens_when_they_pay()
    {
        var source = await TestNode.StartAsync("""
            , "decisions": { "price": "ask", "maxPathPrice": 10 }
            """, broker: Broker.LocalEndPoint);
        Nodes.Add(source);
        var relay = await TestNode.StartAsync(""", "price": 1000""", broker: Broker.LocalEndPoint);
        Nodes.Add(relay);
        var destination = await StartNodeAsync();
        await source.LinkToAsync(relay).WaitAsync(Bound, Ct);
        await relay.LinkToAsync(destination).WaitAsync(Bound, Ct);
        // Both ends of each link confirm it (a route needs both), and the relay's price is known.
        await UntilGraph(source, g => g.RecordOf(relay.Node.Address)?.TryGetUpLinkTo(destination.Node.Address, out var l) == true && l.PricePerMiB == 1000
            && g.Neighbours(destination.Node.Address).Any(n => n.Peer == relay.Node.Address)
            && g.Neighbours(source.Node.Address).Any(n => n.Peer == relay.Node.Address),
            "learning the relay's link and price");

        var waiting = new TaskCompletionSource<Events.NodeEvent>(TaskCreationOptions.RunContinuationsAsynchronously);
        source.Node.Events.Appended += e =>
        {
            if (e.Kind == Events.NodeEventKind.DecisionPending)
                waiting.TrySetResult(e);
        };
        var opening = source.Client.OpenPathAsync(destination.Address, cancellationToken: Ct);
        // The open request waits for the owner; should it end instead (no route), its error says why.
        if (await Task.WhenAny(waiting.Task, opening).WaitAsync(Bound, Ct) == opening)
        {
            var ended = await opening;   // throws the request's error, if it failed
            Assert.Fail($"the path request ended without asking the owner: {ended.State}");
        }
        var asked = Assert.Single(source.Node.Operator.Waiting);
        Assert.Equal("price", asked.Kind);
        Assert.Equal(1000UL, Assert.IsType<ulong>(asked.Data["price"]));
        Assert.False(opening.IsCompleted);

        await source.Client.DecideAsync(asked.Id, "pay", cancellationToken: Ct);
        var path = await opening.WaitAsync(Bound, Ct);
        Assert.Equal("up", path.State);
        Assert.Equal(1000UL, path.Price);

        // With "cheaper" the node looks for a path within the cap; there is none, and it says so.
        await source.Client.RemovePathAsync(path.Id, Ct);
        await source.Client.SetPoliciesAsync(new PoliciesRequest(null, null, null, "cheaper", null), Ct);
        var refused = await Assert.ThrowsAsync<NodeApiException>(() => source.Client.OpenPathAsync(destination.Address, cancellationToken: Ct));
        Assert.Equal(HttpStatusCode.NotFound, refused.Status);
        Assert.Contains("price cap", refused.Message, StringComparison.Ordinal);
        Assert.Empty(source.Node.Operator.Waiting);
    }
}
