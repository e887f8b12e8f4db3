using Microsoft.Extensions.Time.Testing;
using Skymesh.Mesh.Forwarding;

namespace Skymesh.Mesh.Tests.Forwarding;

public class LabelTableTests
{
    private readonly FakeTimeProvider _time = new();

    [Fact]
    public void Reserved_labels_are_distinct_small_numbers_from_two_per_link()
    {
        var table = new LabelTable(_time);
        var onLinkOne = Enumerable.Range(0, 100).Select(_ => table.Reserve(1)).ToList();
        // 0 is the link's own, 1 its link-local channel.
        Assert.Equal(Enumerable.Range(2, 100).Select(i => (uint)i), onLinkOne);
        Assert.Equal(2u, table.Reserve(2));
    }

    [Fact]
    public void An_installed_entry_forwards_or_delivers_and_an_unknown_label_is_counted()
    {
        var table = new LabelTable(_time);
        var a = table.Reserve(0);
        table.Install(0, a, LabelAction.Forward(3, 77));
        table.Install(0, 500, LabelAction.Deliver(9));
        var now = _time.GetTimestamp();
        Assert.True(table.TryLookup(0, a, now, out var forward));
        Assert.Equal(LabelAction.Forward(3, 77), forward);
        Assert.True(table.TryLookup(0, 500, now, out var deliver));
        Assert.Equal(LabelAction.Deliver(9), deliver);
        Assert.False(table.TryLookup(0, 501, now, out _));
        Assert.False(table.TryLookup(7, a, now, out _));
        Assert.Equal(2, table.UnknownLabels);
    }

    [Fact]
    public void A_reserved_label_without_an_action_switches_nothing()
    {
        var table = new LabelTable(_time);
        var label = table.Reserve(0);
        Assert.False(table.TryLookup(0, label, _time.GetTimestamp(), out _));
        Assert.Empty(table.List());
    }

    [Fact]
    public void Entries_expire_unless_traffic_or_a_keepalive_refreshes_them()
    {
        var table = new LabelTable(_time, TimeSpan.FromSeconds(30));
        table.Install(0, 1, LabelAction.Deliver(1));
        table.Install(0, 2, LabelAction.Deliver(2));
        table.Install(0, 3, LabelAction.Deliver(3));
        for (var i = 0; i < 5; i++)
        {
            _time.Advance(TimeSpan.FromSeconds(20));
            Assert.True(table.TryLookup(0, 1, _time.GetTimestamp(), out _)); // traffic
            Assert.True(table.Refresh(0, 2)); // keepalive
            var expired = table.Sweep();
            if (i == 1)
                Assert.Equal([3u], expired.Select(e => e.InLabel));
            else
                Assert.Empty(expired);
        }
        Assert.Equal([1u, 2u], table.List().Select(e => e.InLabel));
        Assert.Equal(1, table.Expired);
    }

    [Fact]
    public void A_link_going_down_removes_the_paths_that_enter_or_leave_by_it()
    {
        var table = new LabelTable(_time);
        table.Install(1, 10, LabelAction.Forward(2, 20)); // enters by 1
        table.Install(3, 30, LabelAction.Forward(1, 40)); // leaves by 1
        table.Install(3, 31, LabelAction.Forward(2, 41)); // unrelated
        table.Install(1, 11, LabelAction.Deliver(5)); // enters by 1
        var removed = table.RemoveLink(1);
        Assert.Equal([(1, 10u), (1, 11u), (3, 30u)], removed.Select(e => (e.InLink, e.InLabel)).Order());
        Assert.Equal([(3, 31u)], table.List().Select(e => (e.InLink, e.InLabel)));
    }

    [Fact]
    public void Impossible_entries_are_refused_with_a_reason()
    {
        var table = new LabelTable(_time, maxLabelsPerLink: 8);
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Install(0, 0, LabelAction.Deliver(1)));
        Assert.Throws<ArgumentException>(() => table.Install(0, 1, LabelAction.Forward(1, 0)));
        Assert.Throws<ArgumentOutOfRangeException>(() => table.Install(0, 8, LabelAction.Deliver(1)));
        for (var i = 0; i < 6; i++)
            table.Reserve(0);
        var full = Assert.Throws<InvalidOperationException>(() => table.Reserve(0));
        Assert.Contains("labels in use", full.Message, StringComparison.Ordinal);
        Assert.False(table.Remove(4, 1));
    }

    [Fact]
    public async Task Lookups_from_other_threads_see_a_consistent_table_while_it_grows()
    {
        var table = new LabelTable(_time);
        table.Install(0, 1, LabelAction.Forward(1, 1));
        const uint last = 50_000;
        // Readers look up the first entry until they see the last one installed; every lookup on the way
        // must succeed while the array under them is replaced again and again.
        var readers = Enumerable.Range(0, 2).Select(reader => Task.Run(() =>
        {
            var now = _time.GetTimestamp();
            for (var i = 0; i < 50_000_000; i++)
            {
                if (!table.TryLookup(0, 1, now, out var first) || first.OutLabel != 1)
                    return false;
                if (table.TryLookup(0, last, now, out _))
                    return true;
            }
            return false;
        }, TestContext.Current.CancellationToken)).ToArray();
        for (uint label = 2; label <= last; label++)
            table.Install(0, label, LabelAction.Forward(1, label));
        Assert.All(await Task.WhenAll(readers), Assert.True);
    }
}
