using System.Buffers.Binary;
using System.Text;
using Microsoft.Extensions.Time.Testing;
using Skymesh.Control.Discovery;
using Skymesh.Control.Topology;
using Skymesh.Identity;

namespace Skymesh.Control.Tests;

public sealed class ServiceRecordTests : IDisposable
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

    private static readonly ServiceEntry Vpn = new(ServiceKind.Vpn, PricePerMiB: 200, MaxMbps: 50, MaxSessions: 10, Region: "eu-west");
    private static readonly ServiceEntry Web = new(ServiceKind.App, "web", 8080);

    private ServiceRecord Record(ulong sequence, params ServiceEntry[] entries) =>
        ServiceRecord.Create(_node, sequence, _time.GetUtcNow(), TimeSpan.FromMinutes(2), entries);

    [Fact]
    public void A_record_round_trips_and_verifies_with_every_field()
    {
        var entries = new[] { Vpn, Web, new ServiceEntry(ServiceKind.Exit, PricePerMiB: uint.MaxValue, Region: "Zürich ☂"), new ServiceEntry(ServiceKind.Socks) };
        var record = Record(7, entries);
        Assert.Equal(ServiceRecordError.None, ServiceRecord.TryParse(record.Bytes, out var parsed));
        Assert.True(parsed!.Verify());
        Assert.Equal(_node.Address, parsed.Node);
        Assert.Equal(7ul, parsed.Sequence);
        Assert.Equal(Start, parsed.Issued);
        Assert.Equal(TimeSpan.FromMinutes(2), parsed.Lifetime);
        Assert.Equal(entries, parsed.Entries);
        Assert.Equal(record.Bytes, parsed.Bytes);
        // The layout is the documented one: a 57-byte header, 15 bytes an entry and its text, a signature.
        Assert.Equal(57 + (15 + 7) + (15 + 3) + (15 + Encoding.UTF8.GetByteCount("Zürich ☂")) + 15 + 64, record.Bytes.Length);
        Assert.Equal("SKS1"u8.ToArray(), record.Bytes[..4]);
        Assert.Equal(4, record.Bytes[56]);
    }

    [Fact]
    public void Thirty_two_offers_fit_a_record_and_thirty_three_do_not()
    {
        var apps = Enumerable.Range(0, 33).Select(i => new ServiceEntry(ServiceKind.App, $"app{i}", (ushort)(1000 + i), Region: new string('r', 32))).ToArray();
        var record = Record(1, apps[..32]);
        Assert.Equal(ServiceRecordError.None, ServiceRecord.TryParse(record.Bytes, out _));
        Assert.Throws<ArgumentException>(() => Record(1, apps));
    }

    [Theory]
    [InlineData("a vpn with a name")]
    [InlineData("an app without a name")]
    [InlineData("an app without a port")]
    [InlineData("an exit with a port")]
    [InlineData("a name of 33 bytes")]
    [InlineData("a region of 33 bytes")]
    [InlineData("a control character")]
    [InlineData("the same offer twice")]
    public void Create_refuses_offers_a_record_cannot_carry(string what)
    {
        ServiceEntry[] entries = what switch
        {
            "a vpn with a name" => [new ServiceEntry(ServiceKind.Vpn, "x")],
            "an app without a name" => [new ServiceEntry(ServiceKind.App, "", 80)],
            "an app without a port" => [new ServiceEntry(ServiceKind.App, "web")],
            "an exit with a port" => [new ServiceEntry(ServiceKind.Exit, Port: 80)],
            "a name of 33 bytes" => [new ServiceEntry(ServiceKind.App, new string('n', 33), 80)],
            "a region of 33 bytes" => [new ServiceEntry(ServiceKind.Vpn, Region: new string('é', 17))],
            "a control character" => [new ServiceEntry(ServiceKind.Vpn, Region: "eu\u001b[2J")],
            _ => [Vpn, Vpn with { PricePerMiB = 1 }],
        };
        Assert.Throws<ArgumentException>(() => Record(1, entries));
    }

    /// <summary>A record written byte by byte and signed by the node, so that its form is the only thing wrong.</summary>
    private byte[] Raw(byte count, byte[] entries, uint lifetime = 120, long? issuedMs = null, string magic = "SKS1")
    {
        var body = new byte[57 + entries.Length];
        Encoding.ASCII.GetBytes(magic).CopyTo(body, 0);
        _node.Address.WriteTo(body.AsSpan(4));
        BinaryPrimitives.WriteUInt64BigEndian(body.AsSpan(36), 1);
        BinaryPrimitives.WriteInt64BigEndian(body.AsSpan(44), issuedMs ?? Start.ToUnixTimeMilliseconds());
        BinaryPrimitives.WriteUInt32BigEndian(body.AsSpan(52), lifetime);
        body[56] = count;
        entries.CopyTo(body, 57);
        var signed = new byte[body.Length + NodeKey.SignatureLength];
        body.CopyTo(signed, 0);
        _node.Sign(ServiceRecord.SignaturePurpose, body, signed.AsSpan(body.Length));
        return signed;
    }

    private static byte[] Entry(byte kind, byte[] name, ushort port, byte[] region, int? nameLength = null, int? regionLength = null)
    {
        var bytes = new List<byte> { kind, (byte)(nameLength ?? name.Length) };
        bytes.AddRange(name);
        var fixedPart = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(fixedPart, port);
        BinaryPrimitives.WriteUInt32BigEndian(fixedPart.AsSpan(2), 100);
        bytes.AddRange(fixedPart);
        bytes.Add((byte)(regionLength ?? region.Length));
        bytes.AddRange(region);
        return [.. bytes];
    }

    public static TheoryData<string> MalformedCases => new()
    {
        "a wrong magic", "a count of 33", "a count over the entries", "a count under the entries", "a lifetime of 0", "an issue time past year 9999",
        "kind 0", "kind 5", "a vpn with a name", "an app with no name", "an app on port 0", "an exit on a port", "a name length past the end",
        "a name of 33 bytes", "a region of 33 bytes", "a region that is not UTF-8", "a name with a control character", "the same app twice",
        "no signature",
    };

    [Theory]
    [MemberData(nameof(MalformedCases))]
    public void Malformed_records_are_refused_as_malformed_and_counted(string what)
    {
        var vpn = Entry(3, [], 0, "eu"u8.ToArray());
        var web = Entry(4, "web"u8.ToArray(), 8080, []);
        var bytes = what switch
        {
            "a wrong magic" => Raw(1, vpn, magic: "SKA1"),
            "a count of 33" => Raw(33, [.. Enumerable.Range(0, 33).SelectMany(i => Entry(4, Encoding.ASCII.GetBytes($"a{i}"), 80, []))]),
            "a count over the entries" => Raw(2, vpn),
            "a count under the entries" => Raw(1, [.. vpn, .. web]),
            "a lifetime of 0" => Raw(1, vpn, lifetime: 0),
            "an issue time past year 9999" => Raw(1, vpn, issuedMs: long.MaxValue),
            "kind 0" => Raw(1, Entry(0, [], 0, [])),
            "kind 5" => Raw(1, Entry(5, [], 0, [])),
            "a vpn with a name" => Raw(1, Entry(3, "x"u8.ToArray(), 0, [])),
            "an app with no name" => Raw(1, Entry(4, [], 8080, [])),
            "an app on port 0" => Raw(1, Entry(4, "web"u8.ToArray(), 0, [])),
            "an exit on a port" => Raw(1, Entry(1, [], 443, [])),
            "a name length past the end" => Raw(1, Entry(4, "web"u8.ToArray(), 8080, [], nameLength: 200)),
            "a name of 33 bytes" => Raw(1, Entry(4, Encoding.ASCII.GetBytes(new string('n', 33)), 8080, [])),
            "a region of 33 bytes" => Raw(1, Entry(3, [], 0, Encoding.ASCII.GetBytes(new string('r', 33)))),
            "a region that is not UTF-8" => Raw(1, Entry(3, [], 0, [0xC3, 0x28])),
            "a name with a control character" => Raw(1, Entry(4, "we\nb"u8.ToArray(), 8080, [])),
            "the same app twice" => Raw(2, [.. web, .. web]),
            _ => Raw(1, vpn)[..^NodeKey.SignatureLength],
        };
        var directory = new ServiceDirectory(_time);
        Assert.Equal(ServiceRecordError.Malformed, directory.Offer(bytes));
        Assert.Equal(1, directory.Refused(ServiceRecordError.Malformed));
        Assert.Equal(0, directory.Count);
    }

    [Fact]
    public void A_record_written_by_hand_to_the_layout_is_accepted()
    {
        // The malformed cases above are refused for their fault alone: the same writer with nothing wrong is taken.
        var directory = new ServiceDirectory(_time);
        Assert.Equal(ServiceRecordError.None, directory.Offer(Raw(2, [.. Entry(3, [], 0, "eu"u8.ToArray()), .. Entry(4, "web"u8.ToArray(), 8080, [])])));
        Assert.Equal([ServiceKind.Vpn, ServiceKind.App], directory.RecordOf(_node.Address)!.Entries.Select(e => e.Kind));
    }

    [Theory]
    [InlineData(0)]
    [InlineData(56)]
    [InlineData(57 + 64 - 1)]
    public void Truncated_records_are_malformed(int length)
    {
        var bytes = Record(1, Vpn).Bytes;
        var directory = new ServiceDirectory(_time);
        Assert.Equal(ServiceRecordError.Malformed, directory.Offer(bytes.AsSpan(0, Math.Min(length, bytes.Length - 1))));
    }

    [Fact]
    public void Every_flipped_byte_is_refused()
    {
        var record = Record(1, Vpn, Web);
        for (var i = 0; i < record.Bytes.Length; i++)
        {
            var tampered = (byte[])record.Bytes.Clone();
            tampered[i] ^= 0x01;
            Assert.NotEqual(ServiceRecordError.None, new ServiceDirectory(_time).Offer(tampered));
        }
    }

    [Fact]
    public void A_record_claiming_another_node_but_signed_by_the_forger_is_refused_as_a_bad_signature()
    {
        var forged = ServiceRecord.Create(_other, 1, _time.GetUtcNow(), TimeSpan.FromMinutes(2), [Vpn with { PricePerMiB = 0 }]).Bytes;
        _node.Address.WriteTo(forged.AsSpan(4));
        var directory = new ServiceDirectory(_time);
        Assert.Equal(ServiceRecordError.BadSignature, directory.Offer(forged));
        Assert.Equal(1, directory.Refused(ServiceRecordError.BadSignature));
        Assert.Null(directory.RecordOf(_node.Address));
    }

    [Fact]
    public void A_price_changed_in_flight_is_refused_as_a_bad_signature()
    {
        var bytes = Record(1, Vpn).Bytes;
        // The vpn's price is the four bytes after kind, name length and port.
        bytes[57 + 1 + 1 + 2 + 3] ^= 0xFF;
        Assert.Equal(ServiceRecordError.None, ServiceRecord.TryParse(bytes, out var parsed));
        Assert.NotEqual(Vpn.PricePerMiB, parsed!.Entries[0].PricePerMiB);
        var directory = new ServiceDirectory(_time);
        Assert.Equal(ServiceRecordError.BadSignature, directory.Offer(bytes));
        Assert.Equal(1, directory.Refused(ServiceRecordError.BadSignature));
    }

    [Fact]
    public void Stale_replayed_expired_and_future_records_are_refused_and_counted()
    {
        var directory = new ServiceDirectory(_time, TimeSpan.FromSeconds(30));
        var first = Record(5, Vpn);
        Assert.Equal(ServiceRecordError.None, directory.Offer(first.Bytes));
        Assert.Equal(ServiceRecordError.Replayed, directory.Offer(first.Bytes));
        Assert.Equal(ServiceRecordError.Stale, directory.Offer(Record(4, Vpn).Bytes));
        Assert.Equal(ServiceRecordError.None, directory.Offer(Record(6, Vpn, Web).Bytes));
        Assert.Equal(6ul, directory.RecordOf(_node.Address)!.Sequence);

        var future = ServiceRecord.Create(_node, 9, Start.AddSeconds(31), TimeSpan.FromMinutes(2), [Vpn]);
        Assert.Equal(ServiceRecordError.FromTheFuture, directory.Offer(future.Bytes));
        var old = ServiceRecord.Create(_node, 10, Start.AddMinutes(-3), TimeSpan.FromMinutes(2), [Vpn]);
        Assert.Equal(ServiceRecordError.Expired, directory.Offer(old.Bytes));

        Assert.Equal(2, directory.Accepted);
        foreach (var reason in new[] { ServiceRecordError.Replayed, ServiceRecordError.Stale, ServiceRecordError.FromTheFuture, ServiceRecordError.Expired })
            Assert.Equal(1, directory.Refused(reason));
        Assert.Equal(0, directory.Refused(ServiceRecordError.BadSignature));
    }

    [Fact]
    public void An_empty_record_withdraws_the_offers_and_keeps_the_old_record_from_coming_back()
    {
        var directory = new ServiceDirectory(_time);
        var offered = Record(1, Vpn, Web);
        Assert.Equal(ServiceRecordError.None, directory.Offer(offered.Bytes));
        Assert.Equal(2, directory.Matching().Count);
        Assert.Single(directory.Matching(ServiceKind.App, "web"));
        Assert.Empty(directory.Matching(ServiceKind.App, "chat"));

        Assert.Equal(ServiceRecordError.None, directory.Offer(Record(2).Bytes));
        Assert.Empty(directory.Matching());
        Assert.Equal(1, directory.Count);
        // Someone replays the earlier offer: the withdrawal's sequence number refuses it.
        Assert.Equal(ServiceRecordError.Stale, directory.Offer(offered.Bytes));
        Assert.Empty(directory.Matching());
    }

    [Fact]
    public void Expired_records_offer_nothing_and_are_swept_and_a_node_that_left_is_forgotten()
    {
        var directory = new ServiceDirectory(_time);
        Assert.Equal(ServiceRecordError.None, directory.Offer(Record(1, Vpn).Bytes));
        Assert.Equal(ServiceRecordError.None, directory.Offer(ServiceRecord.Create(_other, 1, Start, TimeSpan.FromMinutes(10), [Vpn]).Bytes));
        _time.Advance(TimeSpan.FromMinutes(3));
        Assert.Equal([_other.Address], directory.Matching(ServiceKind.Vpn).Select(m => m.Record.Node));
        Assert.Equal(1, directory.Sweep());
        Assert.True(directory.Forget(_other.Address));
        Assert.Equal(0, directory.Count);
        Assert.False(directory.Forget(_other.Address));
    }
}

/// <summary>
/// Service search over a small mesh (nearly the one of <see cref="PathFindingTests"/>): S-A-D (rtt 10+10, A charges 5),
/// S-B-C-D (rtt 1+1+1, B and C charge 1, D charges 3 towards C), S-E-D (rtt 50+50, E is free); X has no link at all.
/// </summary>
public sealed class ServiceSearchTests : IDisposable
{
    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2026, 11, 25, 12, 0, 0, TimeSpan.Zero));
    private readonly Dictionary<string, NodeKey> _keys;
    private readonly TopologyGraph _graph;
    private readonly ServiceDirectory _services;
    private readonly Dictionary<string, List<AnnouncedLink>> _links = [];

    public ServiceSearchTests()
    {
        _keys = "SABCDEX".ToDictionary(c => c.ToString(), _ => NodeKey.Generate());
        _graph = new TopologyGraph(_time);
        _services = new ServiceDirectory(_time);
        Link("S", "A", 10, priceA: 0, priceB: 5);
        Link("A", "D", 10, priceA: 5, priceB: 0);
        Link("S", "B", 1, 0, 1);
        Link("B", "C", 1, 1, 1);
        Link("C", "D", 1, 1, 3);
        Link("S", "E", 50, 0, 0);
        Link("E", "D", 50, 0, 0);
        _links["X"] = [];
        foreach (var (name, links) in _links)
            Assert.Equal(AnnouncementError.None, _graph.Offer(LinkAnnouncement.Create(_keys[name], 1, _time.GetUtcNow(), TimeSpan.FromMinutes(5), links)));
        Offer("S", new ServiceEntry(ServiceKind.Vpn, PricePerMiB: 0));
        Offer("A", new ServiceEntry(ServiceKind.Vpn, PricePerMiB: 50, Region: "eu-west"), new ServiceEntry(ServiceKind.App, "web", 8080, 3));
        Offer("B", new ServiceEntry(ServiceKind.Socks, PricePerMiB: 10));
        Offer("C", new ServiceEntry(ServiceKind.Vpn, PricePerMiB: 40, MaxMbps: 20, MaxSessions: 5));
        Offer("D", new ServiceEntry(ServiceKind.Vpn, PricePerMiB: 100), new ServiceEntry(ServiceKind.App, "chat", 6667));
        Offer("E", new ServiceEntry(ServiceKind.Exit, PricePerMiB: 0), new ServiceEntry(ServiceKind.Socks, PricePerMiB: 10));
        Offer("X", new ServiceEntry(ServiceKind.Vpn, PricePerMiB: 1));
    }

    public void Dispose()
    {
        foreach (var key in _keys.Values)
            key.Dispose();
    }

    private void Link(string a, string b, uint rttMs, uint priceA, uint priceB)
    {
        Add(a, new AnnouncedLink(_keys[b].Address, rttMs * 1000, 0, 1000, priceA, AnnouncedLinkState.Up));
        Add(b, new AnnouncedLink(_keys[a].Address, rttMs * 1000, 0, 1000, priceB, AnnouncedLinkState.Up));
    }

    private void Add(string node, AnnouncedLink link)
    {
        if (!_links.TryGetValue(node, out var list))
            _links[node] = list = [];
        list.Add(link);
    }

    private void Offer(string node, params ServiceEntry[] entries) =>
        Assert.Equal(ServiceRecordError.None, _services.Offer(ServiceRecord.Create(_keys[node], 1, _time.GetUtcNow(), TimeSpan.FromMinutes(5), entries)));

    private string Name(NodeAddress address) => _keys.Single(k => k.Value.Address == address).Key;

    private List<ServiceOffer> Find(ServiceQuery query) => [.. ServiceSearch.Find(_services, _graph, _keys["S"].Address, query)];

    [Fact]
    public void Offers_come_cheapest_in_all_first_with_the_cost_of_the_cheapest_path_and_without_the_askers_own_or_unreachable_ones()
    {
        var vpns = Find(new ServiceQuery { Kind = ServiceKind.Vpn });
        // C: 40 + B's 1 = 41 over S-B-C; A: 50 + nothing (a neighbour); D: 100 over the free S-E-D. X has no path, S is the asker.
        Assert.Equal(["C", "A", "D"], vpns.Select(o => Name(o.Node)));
        Assert.Equal([41ul, 50ul, 100ul], vpns.Select(o => o.TotalPrice));
        var c = vpns[0];
        Assert.Equal((2, 2000ul, 1ul, 40u, 20u, (ushort)5), (c.Hops, c.RttMicroseconds, c.PathPrice, c.PricePerMiB, c.MaxMbps, c.MaxSessions));
        Assert.Equal("SBC", string.Concat(c.Path.Select(Name)));
        Assert.Equal("eu-west", vpns[1].Region);
        Assert.Equal("SED", string.Concat(vpns[2].Path.Select(Name)));
        Assert.Equal(_time.GetUtcNow() + TimeSpan.FromMinutes(5), c.Expires);
    }

    [Fact]
    public void The_price_cap_counts_the_service_and_the_relays()
    {
        Assert.Equal(["C", "A"], Find(new ServiceQuery { Kind = ServiceKind.Vpn, MaxPrice = 50 }).Select(o => Name(o.Node)));
        Assert.Equal(["C"], Find(new ServiceQuery { Kind = ServiceKind.Vpn, MaxPrice = 41 }).Select(o => Name(o.Node)));
        Assert.Empty(Find(new ServiceQuery { Kind = ServiceKind.Vpn, MaxPrice = 40 }));
    }

    [Fact]
    public void Kind_name_and_limit_filter_and_equal_totals_go_to_the_lower_latency()
    {
        // B's and E's socks both cost 10 in all; B is 1 ms away, E 50.
        Assert.Equal(["B", "E"], Find(new ServiceQuery { Kind = ServiceKind.Socks }).Select(o => Name(o.Node)));
        Assert.Equal(["E"], Find(new ServiceQuery { Kind = ServiceKind.Exit }).Select(o => Name(o.Node)));
        var web = Assert.Single(Find(new ServiceQuery { Name = "web" }));
        Assert.Equal(("A", ServiceKind.App, (ushort)8080, 3ul), (Name(web.Node), web.Kind, web.Port, web.TotalPrice));
        // D's chat is free over the free S-E-D; A's web costs its own 3.
        Assert.Equal(["D", "A"], Find(new ServiceQuery { Kind = ServiceKind.App }).Select(o => Name(o.Node)));
        Assert.Equal(8, Find(new ServiceQuery()).Count);
        Assert.Equal(["E", "D"], Find(new ServiceQuery { Limit = 2 }).Select(o => Name(o.Node)));
    }

    [Fact]
    public void One_search_finds_the_cheapest_path_to_every_node_as_a_search_per_node_would()
    {
        var source = _keys["S"].Address;
        var all = _graph.CheapestPaths(source, _keys.Values.Select(k => k.Address));
        Assert.Equal(["A", "B", "C", "D", "E"], all.Keys.Select(Name).Order());
        foreach (var (node, path) in all)
        {
            var alone = _graph.FindPath(source, node, new PathQuery { Policy = PathPolicy.LowestPrice });
            Assert.Equal((alone.Price, alone.RttMicroseconds, alone.Hops), (path.Price, path.RttMicroseconds, path.Hops));
            Assert.Equal(alone.LinkRtts, path.LinkRtts);
        }
        Assert.Empty(_graph.CheapestPaths(source, [source]));
        // A hop limit of one reaches the neighbours only.
        Assert.Equal(["A", "B", "E"], _graph.CheapestPaths(source, _keys.Values.Select(k => k.Address), maxHops: 1).Keys.Select(Name).Order());
    }
}
