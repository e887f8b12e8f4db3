using System.Net;
using System.Net.Http.Headers;
using Skymesh.Node.Events;

namespace Skymesh.Node.Tests;

/// <summary>The node's event stream: what it records, and <c>GET /api/events</c> as Server-Sent Events with resume.</summary>
public sealed class EventStreamTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private static CancellationToken Ct => TestContext.Current.CancellationToken;

    [Fact]
    public async Task Links_and_paths_show_up_as_numbered_events_and_a_resumed_stream_has_no_gap_and_no_duplicate()
    {
        await using var chain = await Chain.StartAsync(2);
        var source = chain.Source;
        var held = await ReadAllAsync(source.Client.EventsAsync(follow: false, cancellationToken: Ct));
        var events = held.Select(i => i.Event!).ToList();
        Assert.Equal(Enumerable.Range(1, events.Count).Select(i => (long)i), events.Select(e => e.Sequence));
        Assert.Contains(events, e => e.Kind == NodeEventKind.LinkUp && e.Peer == chain.Destination.Address);
        Assert.Contains(events, e => e.Kind == NodeEventKind.PathSetUp && e.Path == chain.Path.Source.Id);

        // A follower reads up to the latest, goes away; more happens; it comes back with Last-Event-ID.
        var last = events[^1].Sequence;
        await source.Node.RemovePathAsync(chain.Path.Source.Id);
        var link = source.Node.FindLink(chain.Destination.Node.Address)!;
        source.Node.Switch.Disconnect(link, "closed by the test");

        using var bounded = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        bounded.CancelAfter(Bound);
        var resumed = new List<NodeEvent>();
        await foreach (var item in source.Client.EventsAsync(after: last, follow: true, bounded.Token))
        {
            Assert.Equal(0, item.Missed);
            resumed.Add(item.Event!);
            if (item.Event!.Kind == NodeEventKind.LinkDown)
                break;
        }
        Assert.Equal(Enumerable.Range(0, resumed.Count).Select(i => last + 1 + i), resumed.Select(e => e.Sequence));
        Assert.Equal(NodeEventKind.PathClosed, resumed[0].Kind);
        Assert.Contains("closed by the test", resumed[^1].Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_stream_is_server_sent_events_for_the_owner_only()
    {
        await using var node = await TestNode.StartAsync();
        using var http = new HttpClient { BaseAddress = new Uri($"http://{node.Api.EndPoint}/") };
        using var anonymous = await http.GetAsync("api/events?follow=false", Ct);
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);

        node.Node.Events.Append(NodeEventKind.AppStarted, "a marker", app: 7);
        using var request = new HttpRequestMessage(HttpMethod.Get, "api/events?follow=false");
        request.Headers.Authorization = new AuthenticationHeaderValue(ApiToken.Scheme, node.Api.Token);
        using var response = await http.SendAsync(request, Ct);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var text = await response.Content.ReadAsStringAsync(Ct);
        var last = node.Node.Events.Last;
        Assert.Contains($"id: {last}\nevent: AppStarted\ndata: {{", text, StringComparison.Ordinal);
        Assert.Contains("\"detail\":\"a marker\"", text, StringComparison.Ordinal);

        using var bad = new HttpRequestMessage(HttpMethod.Get, "api/events");
        bad.Headers.Authorization = new AuthenticationHeaderValue(ApiToken.Scheme, node.Api.Token);
        bad.Headers.Add("Last-Event-ID", "yesterday");
        using var refused = await http.SendAsync(bad, Ct);
        Assert.Equal(HttpStatusCode.BadRequest, refused.StatusCode);
    }

    [Fact]
    public async Task The_ring_keeps_the_newest_events_and_says_how_many_a_slow_reader_missed()
    {
        var log = new NodeEventLog(capacity: 4);
        for (var i = 1; i <= 10; i++)
            log.Append(NodeEventKind.LinkUp, $"event {i}");
        var kept = log.Since(2, out var missed);
        Assert.Equal(4, missed); // 3 to 6 left the ring
        Assert.Equal(new long[] { 7, 8, 9, 10 }, kept.Select(e => e.Sequence));
        Assert.Empty(log.Since(10, out missed));
        Assert.Equal(0, missed);
        Assert.Equal(new long[] { 9, 10 }, log.Since(8, out missed).Select(e => e.Sequence));
        Assert.Equal(0, missed);
        Assert.True(log.WaitAsync(9, Ct).IsCompleted);
        var waiting = log.WaitAsync(10, Ct);
        Assert.False(waiting.IsCompleted);
        log.Append(NodeEventKind.LinkDown, "event 11");
        await waiting.WaitAsync(Bound, Ct);

        // A ring that starts small and grows as events come keeps every one of them until it is full.
        var growing = new NodeEventLog(capacity: 100);
        for (var i = 1; i <= 70; i++)
            growing.Append(NodeEventKind.PathSetUp, $"event {i}");
        Assert.Equal(Enumerable.Range(1, 70).Select(i => (long)i), growing.Since(0, out missed).Select(e => e.Sequence));
        Assert.Equal(0, missed);
        for (var i = 71; i <= 150; i++)
            growing.Append(NodeEventKind.PathSetUp, $"event {i}");
        var held = growing.Since(0, out missed);
        Assert.Equal(Enumerable.Range(51, 100).Select(i => (long)i), held.Select(e => e.Sequence));
        Assert.Equal("event 150", held[^1].Detail);
        Assert.Equal(50, missed);
    }

    private static async Task<List<EventStreamItem>> ReadAllAsync(IAsyncEnumerable<EventStreamItem> items)
    {
        var all = new List<EventStreamItem>();
        await foreach (var item in items)
            all.Add(item);
        return all;
    }
}
