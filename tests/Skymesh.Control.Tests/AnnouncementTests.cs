using Microsoft.Extensions.Time.Testing;
using Skymesh.Control.Topology;
using Skymesh.Identity;

namespace Skymesh.Control.Tests;

public sealed class AnnouncementTests : IDisposable
{
    private static readonly DateTimeOffset Start = new(2026, 11, 25, 12, 0, 0, TimeSpan.Zero);
    private readonly FakeTimeProvider _time = new(Start);
    private readonly NodeKey _node = NodeKey.Generate();
    private readonly NodeKey _other = NodeKey.Generate();

    public void Dispose()
    {
        _node.Dispose();
        _other.Dispose();
    }

    private static AnnouncedLink Up(NodeAddress peer, uint rtt = 1000) => new(peer, rtt, 0, 100_000, 10, AnnouncedLinkState.Up);

    private LinkAnnouncement Record(ulong sequence, params AnnouncedLink[] links) =>
        LinkAnnouncement.Create(_node, sequence, _time.GetUtcNow(), TimeSpan.FromMinutes(5), links);

    [Fact]
    public void A_record_round_trips_and_verifies()
    {
        var record = Record(7, Up(_other.Address, 1234), new AnnouncedLink(NodeKey.Generate().Address, 1, 2, 3, 4, AnnouncedLinkState.Down));
        Assert.Equal(AnnouncementError.None, LinkAnnouncement.TryParse(record.Bytes, out var parsed));
        Assert.True(parsed!.Verify());
        Assert.Equal(_node.Address, parsed.Node);
        Assert.Equal(7ul, parsed.Sequence);
        Assert.Equal(Start, parsed.Issued);
        Assert.Equal(TimeSpan.FromMinutes(5), parsed.Lifetime);
        Assert.Equal(record.Links, parsed.Links);
    }

    [Fact]
    public void Eighteen_links_fit_one_ssmp_payload_and_nineteen_do_not()
    {
        var peers = Enumerable.Range(0, 19).Select(_ => Up(NodeKey.Generate().Address)).ToArray();
        Assert.True(Record(1, peers[..LinkAnnouncement.MaxLinksInOnePayload]).Bytes.Length <= 1024);
        Assert.True(Record(1, peers).Bytes.Length > 1024);
    }

    [Fact]
    public void Every_flipped_byte_is_refused()
    {
        var record = Record(1, Up(_other.Address));
        for (var i = 0; i < record.Bytes.Length; i++)
        {
            var tampered = (byte[])record.Bytes.Clone();
            tampered[i] ^= 0x01;
            var graph = new TopologyGraph(_time);
            Assert.NotEqual(AnnouncementError.None, graph.Offer(tampered));
        }
    }

    [Fact]
    public void A_record_claiming_another_node_but_signed_by_the_forger_is_refused()
    {
        var forged = LinkAnnouncement.Create(_other, 1, _time.GetUtcNow(), TimeSpan.FromMinutes(5), [Up(NodeKey.Generate().Address)]).Bytes;
        _node.Address.WriteTo(forged.AsSpan(4));
        var graph = new TopologyGraph(_time);
        Assert.Equal(AnnouncementError.BadSignature, graph.Offer(forged));
        Assert.Equal(1, graph.Refused(AnnouncementError.BadSignature));
        Assert.Null(graph.RecordOf(_node.Address));
    }

    [Fact]
    public void Stale_replayed_expired_and_future_records_are_refused_and_counted()
    {
        var graph = new TopologyGraph(_time, TimeSpan.FromSeconds(30));
        var first = Record(5, Up(_other.Address));
        Assert.Equal(AnnouncementError.None, graph.Offer(first.Bytes));
        Assert.Equal(AnnouncementError.Replayed, graph.Offer(first.Bytes));
        Assert.Equal(AnnouncementError.Stale, graph.Offer(Record(4).Bytes));
        Assert.Equal(AnnouncementError.None, graph.Offer(Record(6).Bytes));
        Assert.Equal(6ul, graph.RecordOf(_node.Address)!.Sequence);

        var future = LinkAnnouncement.Create(_node, 9, Start.AddSeconds(31), TimeSpan.FromMinutes(5), []);
        Assert.Equal(AnnouncementError.FromTheFuture, graph.Offer(future.Bytes));
        var old = LinkAnnouncement.Create(_node, 10, Start.AddMinutes(-6), TimeSpan.FromMinutes(5), []);
        Assert.Equal(AnnouncementError.Expired, graph.Offer(old.Bytes));
        Assert.Equal(AnnouncementError.Malformed, graph.Offer(new byte[40]));

        Assert.Equal(2, graph.Accepted);
        foreach (var reason in new[] { AnnouncementError.Replayed, AnnouncementError.Stale, AnnouncementError.FromTheFuture, AnnouncementError.Expired, AnnouncementError.Malformed })
            Assert.Equal(1, graph.Refused(reason));
    }

    [Fact]
    public void After_a_record_expires_a_node_may_start_its_sequence_again()
    {
        var graph = new TopologyGraph(_time);
        Assert.Equal(AnnouncementError.None, graph.Offer(Record(100).Bytes));
        _time.Advance(TimeSpan.FromMinutes(6));
        Assert.Equal(AnnouncementError.None, graph.Offer(Record(1).Bytes));
        Assert.Equal(1, graph.Sweep() + 1);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(57)]
    [InlineData(58 + 64 + 1)]
    public void Truncated_records_are_malformed(int length)
    {
        var bytes = Record(1, Up(_other.Address)).Bytes;
        var graph = new TopologyGraph(_time);
        Assert.Equal(AnnouncementError.Malformed, graph.Offer(bytes.AsSpan(0, Math.Min(length, bytes.Length - 1))));
    }
}
