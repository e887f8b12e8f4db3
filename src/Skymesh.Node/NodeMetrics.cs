using System.Globalization;
using System.Text;
using Skymesh.Mesh.Links;

namespace Skymesh.Node;

/// <summary>The node's counters in the Prometheus text exposition format (version 0.0.4).</summary>
public static partial class NodeMetrics
{
    public static string Render(MeshNode node, Control.ControlPlane? control = null)
    {
        ArgumentNullException.ThrowIfNull(node);
        var w = new Writer();
        if (control is not null)
        {
            w.Family("skymesh_control_connected", "gauge", "1 while the control agent is on its control bus, 0 while the node tries to reach it.");
            w.Sample("skymesh_control_connected", "", control.Connected ? 1 : 0);
            w.Family("skymesh_control_login_attempts_total", "counter", "Attempts to get the control agent onto its control bus, by result.");
            w.Sample("skymesh_control_login_attempts_total", "result=\"ok\"", control.Connects);
            w.Sample("skymesh_control_login_attempts_total", "result=\"failed\"", control.Failures);
            if (control.Agent?.Bus is { } bus)
            {
                w.Family("skymesh_control_unproven_senders_total", "counter", "Control-bus messages refused because the bus could not prove their sender is a node.");
                w.Sample("skymesh_control_unproven_senders_total", "", bus.UnprovenSenders);
                w.Family("skymesh_control_dropped_events_total", "counter", "Control-bus deliveries dropped because the agent fell behind reading them.");
                w.Sample("skymesh_control_dropped_events_total", "", bus.DroppedEvents);
            }
            if (control.Agent is { } agent)
            {
                var services = agent.Services;
                w.Family("skymesh_service_records", "gauge", "Service records held, one per node (this node's own, and withdrawals, included).");
                w.Sample("skymesh_service_records", "", services.Count);
                w.Family("skymesh_service_records_accepted_total", "counter", "Service records accepted since the agent joined the bus.");
                w.Sample("skymesh_service_records_accepted_total", "", services.Accepted);
                w.Family("skymesh_service_records_refused_total", "counter", "Service records refused, by reason.");
                foreach (var (reason, label) in ServiceRefusals)
                    w.Sample("skymesh_service_records_refused_total", $"reason=\"{label}\"", services.Refused(reason));
                w.Family("skymesh_service_records_published_total", "counter", "Service records this node signed and published.");
                w.Sample("skymesh_service_records_published_total", "", agent.ServicesPublished);
            }
        }
        var relay = node.BusRelay.Counters();
        w.Family("skymesh_bus_relay_tunnels", "gauge", "Tunnels to the control bus this node relays for neighbours now.");
        w.Sample("skymesh_bus_relay_tunnels", "", relay.TunnelsOpen);
        w.Family("skymesh_bus_relay_tunnels_total", "counter", "Tunnels to the control bus neighbours asked this node for, by result.");
        w.Sample("skymesh_bus_relay_tunnels_total", "result=\"opened\"", relay.TunnelsOpened);
        w.Sample("skymesh_bus_relay_tunnels_total", "result=\"refused\"", relay.TunnelsRefused);
        w.Sample("skymesh_bus_relay_tunnels_total", "result=\"failed\"", relay.TunnelsFailed);
        w.Family("skymesh_bus_relay_bytes_total", "counter", "Control-bus bytes relayed for neighbours, by neighbour and direction (up: towards the broker).");
        foreach (var n in relay.Neighbours)
        {
            w.Sample("skymesh_bus_relay_bytes_total", $"neighbour=\"{n.Neighbour}\",direction=\"up\"", n.BytesUp);
            w.Sample("skymesh_bus_relay_bytes_total", $"neighbour=\"{n.Neighbour}\",direction=\"down\"", n.BytesDown);
        }
        w.Family("skymesh_bus_relay_throttled_total", "counter", "Times relayed control traffic waited because a neighbour used its bytes-per-second budget.");
        w.Sample("skymesh_bus_relay_throttled_total", "", relay.ThrottledWaits);
        if (node.BusRelay.LeafnodeEndPoint is not null)
        {
            var (taken, open, failed) = node.BusRelay.Leafnodes;
            w.Family("skymesh_leafnode_connections", "gauge", "Leaf-node connections of the NATS server beside this node carried through its neighbours now.");
            w.Sample("skymesh_leafnode_connections", "", open);
            w.Family("skymesh_leafnode_connections_total", "counter", "Leaf-node connections taken from the NATS server beside this node, by result.");
            w.Sample("skymesh_leafnode_connections_total", "result=\"taken\"", taken);
            w.Sample("skymesh_leafnode_connections_total", "result=\"failed\"", failed);
        }
        w.Family("skymesh_nat_links_total", "counter", "Links this node made through NATs, by how: punched, or relayed by a neighbour of both.");
        w.Sample("skymesh_nat_links_total", "how=\"punched\"", node.Nat.Punched);
        w.Sample("skymesh_nat_links_total", "how=\"relayed\"", node.Nat.Relayed);
        w.Family("skymesh_nat_punch_failures_total", "counter", "Hole punches that found no way through the NATs.");
        w.Sample("skymesh_nat_punch_failures_total", "", node.Nat.PunchFailures);
        var linkRelay = node.LinkRelay.Counters();
        w.Family("skymesh_link_relay_open", "gauge", "Links between other nodes this node relays now.");
        w.Sample("skymesh_link_relay_open", "", linkRelay.Open);
        w.Family("skymesh_link_relay_requests_total", "counter", "Relayed links neighbours asked this node for, by result.");
        w.Sample("skymesh_link_relay_requests_total", "result=\"opened\"", linkRelay.Opened);
        w.Sample("skymesh_link_relay_requests_total", "result=\"refused\"", linkRelay.Refused);
        w.Family("skymesh_link_relay_datagrams_total", "counter", "Datagrams relayed between the ends of relayed links.");
        w.Sample("skymesh_link_relay_datagrams_total", "", linkRelay.Datagrams);
        w.Family("skymesh_link_relay_bytes_total", "counter", "Bytes relayed between the ends of relayed links.");
        w.Sample("skymesh_link_relay_bytes_total", "", linkRelay.Bytes);
        w.Family("skymesh_link_relay_dropped_total", "counter", "Datagrams a relay port dropped: from neither end, before both were known, over the rate, or a bind with a wrong token.");
        w.Sample("skymesh_link_relay_dropped_total", "", linkRelay.Dropped);
        w.Family("skymesh_link_channel_refused_total", "counter", "Streams on link-local channels refused: no such service, or a malformed header.");
        w.Sample("skymesh_link_channel_refused_total", "", node.Channels.Refused);
        var sw = node.Switch;
        w.Family("skymesh_forwarded_messages_total", "counter", "Messages switched from one link to another.");
        w.Sample("skymesh_forwarded_messages_total", "", sw.Forwarded);
        w.Family("skymesh_delivered_messages_total", "counter", "Messages delivered to path endpoints on this node.");
        w.Sample("skymesh_delivered_messages_total", "", sw.Delivered);
        w.Family("skymesh_forward_drops_total", "counter", "Messages that matched a label entry but could not go on.");
        w.Sample("skymesh_forward_drops_total", "", sw.ForwardDrops);
        w.Family("skymesh_bad_frames_total", "counter", "Frames dropped as malformed, undecryptable, replayed or out of place.");
        w.Sample("skymesh_bad_frames_total", "", sw.BadFrames);
        w.Family("skymesh_handshake_failures_total", "counter", "Link handshakes refused.");
        w.Sample("skymesh_handshake_failures_total", "", sw.HandshakeFailures);
        var hellos = sw.HelloDrops;
        w.Family("skymesh_hello_drops_total", "counter", "Hellos from strangers dropped, by reason (rate limit, full queue, forged or stale, half-open cap).");
        w.Sample("skymesh_hello_drops_total", "reason=\"rate_limited\"", hellos.RateLimited);
        w.Sample("skymesh_hello_drops_total", "reason=\"queue_full\"", hellos.QueueFull);
        w.Sample("skymesh_hello_drops_total", "reason=\"refused\"", hellos.Refused);
        w.Sample("skymesh_hello_drops_total", "reason=\"half_open_cap\"", hellos.HalfOpenCapped);
        w.Family("skymesh_hello_cookies_total", "counter", "Hellos answered with a cookie instead of being handled, because the node was under load.");
        w.Sample("skymesh_hello_cookies_total", "", sw.CookiesSent);
        w.Family("skymesh_neighbours_refused_total", "counter", "Verified Hellos not answered: from a blocked node, or a stranger the owner has not accepted (docs/dashboard.md).");
        w.Sample("skymesh_neighbours_refused_total", "", sw.NeighboursRefused);
        w.Family("skymesh_frames_on_down_interfaces_total", "counter", "Frames dropped because they arrived on an interface the owner took down.");
        w.Sample("skymesh_frames_on_down_interfaces_total", "", sw.FramesOnDownInterfaces);
        w.Family("skymesh_decisions_pending", "gauge", "Decisions waiting for the node's owner.");
        w.Sample("skymesh_decisions_pending", "", node.Operator.Waiting.Count);
        w.Family("skymesh_decisions_overflowed_total", "counter", "Questions settled by refusing because too many decisions were waiting already.");
        w.Sample("skymesh_decisions_overflowed_total", "", node.Operator.Overflowed);
        w.Family("skymesh_links_half_open", "gauge", "Links answered that have not finished their handshake.");
        w.Sample("skymesh_links_half_open", "", sw.HalfOpen);
        w.Family("skymesh_unknown_labels_total", "counter", "Messages with a label nobody installed (dropped).");
        w.Sample("skymesh_unknown_labels_total", "", sw.Labels.UnknownLabels);
        w.Family("skymesh_label_entries_expired_total", "counter", "Label entries that expired without traffic.");
        w.Sample("skymesh_label_entries_expired_total", "", sw.Labels.Expired);
        w.Family("skymesh_label_entries", "gauge", "Label entries installed.");
        w.Sample("skymesh_label_entries", "", sw.Labels.List().Count);

        var nics = node.Interfaces.Values.ToList();
        foreach (var (name, help, read) in new (string, string, Func<Mesh.Interfaces.InterfaceCounters, long>)[]
        {
            ("skymesh_interface_frames_sent_total", "Frames sent by an interface.", c => c.FramesSent),
            ("skymesh_interface_frames_received_total", "Frames received by an interface.", c => c.FramesReceived),
            ("skymesh_interface_bytes_sent_total", "Bytes sent by an interface.", c => c.BytesSent),
            ("skymesh_interface_bytes_received_total", "Bytes received by an interface.", c => c.BytesReceived),
        })
        {
            w.Family(name, "counter", help);
            foreach (var i in nics)
                w.Sample(name, Label("interface", i.Name), read(i.Counters));
        }
        w.Family("skymesh_interface_drops_total", "counter", "Frames an interface dropped, by direction.");
        foreach (var i in nics)
        {
            w.Sample("skymesh_interface_drops_total", Label("interface", i.Name) + ",direction=\"send\"", i.Counters.SendDrops);
            w.Sample("skymesh_interface_drops_total", Label("interface", i.Name) + ",direction=\"receive\"", i.Counters.ReceiveDrops);
        }

        var links = sw.Links.Where(l => l.State != LinkState.Down).OrderBy(l => l.Id).Select(l => l.Info()).ToList();
        static string LinkLabels(LinkInfo l) => $"link=\"{l.Id}\",peer=\"{l.Peer ?? ""}\"";
        w.Family("skymesh_link_up", "gauge", "1 for a link that is up, 0 while it shakes hands.");
        foreach (var l in links)
            w.Sample("skymesh_link_up", LinkLabels(l), l.State == LinkState.Up ? 1 : 0);
        foreach (var (name, help, sent, received) in new (string, string, Func<LinkInfo, long>, Func<LinkInfo, long>)[]
        {
            ("skymesh_link_frames_total", "Frames on a link, by direction.", l => l.FramesSent, l => l.FramesReceived),
            ("skymesh_link_messages_total", "Messages on a link, by direction.", l => l.MessagesSent, l => l.MessagesReceived),
            ("skymesh_link_bytes_total", "Bytes on a link, by direction.", l => l.BytesSent, l => l.BytesReceived),
        })
        {
            w.Family(name, "counter", help);
            foreach (var l in links)
            {
                w.Sample(name, LinkLabels(l) + ",direction=\"sent\"", sent(l));
                w.Sample(name, LinkLabels(l) + ",direction=\"received\"", received(l));
            }
        }
        w.Family("skymesh_link_recovery_total", "counter", "Lost frames recovered on the link itself: frames asked for again, recovered, sent again on request, tail probes, given up.");
        foreach (var l in links)
        {
            w.Sample("skymesh_link_recovery_total", LinkLabels(l) + ",event=\"asked\"", l.FramesAskedFor);
            w.Sample("skymesh_link_recovery_total", LinkLabels(l) + ",event=\"recovered\"", l.FramesRecovered);
            w.Sample("skymesh_link_recovery_total", LinkLabels(l) + ",event=\"resent\"", l.FramesRetransmitted);
            w.Sample("skymesh_link_recovery_total", LinkLabels(l) + ",event=\"tail_probe\"", l.TailProbes);
            w.Sample("skymesh_link_recovery_total", LinkLabels(l) + ",event=\"given_up\"", l.FramesGivenUp);
        }
        w.Family("skymesh_link_send_drops_total", "counter", "Messages a link could not send (queue full, down).");
        foreach (var l in links)
            w.Sample("skymesh_link_send_drops_total", LinkLabels(l), l.SendDrops);
        w.Family("skymesh_link_credit_drops_total", "counter", "Messages from a neighbour not forwarded because it was over its credit.");
        foreach (var l in sw.Links.Where(l => l.State != LinkState.Down).OrderBy(l => l.Id))
            w.Sample("skymesh_link_credit_drops_total", $"link=\"{l.Id}\",peer=\"{l.Peer?.ToString() ?? ""}\"", l.CreditDrops);
        w.Family("skymesh_link_rtt_seconds", "gauge", "Smoothed round-trip time of a link from keepalives.");
        foreach (var l in links.Where(l => l.Rtt is not null))
            w.Sample("skymesh_link_rtt_seconds", LinkLabels(l), l.Rtt!.Value.TotalSeconds);
        w.Family("skymesh_link_loss_ratio", "gauge", "Estimated share of the neighbour's frames lost.");
        foreach (var l in links)
            w.Sample("skymesh_link_loss_ratio", LinkLabels(l), l.Loss);

        var paths = node.Paths;
        w.Family("skymesh_paths", "gauge", "Path ends on this node, by state.");
        foreach (var group in paths.GroupBy(p => p.State))
            w.Sample("skymesh_paths", Label("state", group.Key), group.Count());
        w.Family("skymesh_path_messages_total", "counter", "Messages of a path end, by direction.");
        foreach (var p in paths)
        {
            w.Sample("skymesh_path_messages_total", $"path=\"{p.Id}\",peer=\"{p.Peer}\",direction=\"sent\"", p.MessagesSent);
            w.Sample("skymesh_path_messages_total", $"path=\"{p.Id}\",peer=\"{p.Peer}\",direction=\"received\"", p.MessagesReceived);
        }
        w.Family("skymesh_path_streams", "gauge", "Streams open on a path end.");
        foreach (var p in paths)
            w.Sample("skymesh_path_streams", $"path=\"{p.Id}\",peer=\"{p.Peer}\"", p.OpenStreams);

        w.Family("skymesh_exit_streams_total", "counter", "Streams from other nodes this node connected to targets, or refused.");
        w.Sample("skymesh_exit_streams_total", "result=\"served\"", node.Exit.Served);
        w.Sample("skymesh_exit_streams_total", "result=\"refused\"", node.Exit.Refused);
        w.Family("skymesh_exit_bytes_total", "counter", "Bytes this node carried between paths and targets.");
        w.Sample("skymesh_exit_bytes_total", "direction=\"to_targets\"", node.Exit.BytesToTargets);
        w.Sample("skymesh_exit_bytes_total", "direction=\"from_targets\"", node.Exit.BytesFromTargets);
        w.Family("skymesh_app_connections_total", "counter", "Connections accepted by local apps (forward, socks).");
        foreach (var (id, app) in node.Apps)
            w.Sample("skymesh_app_connections_total", $"app=\"{id}\",kind=\"{AppInfo.Of(id, app).Kind}\"", app.Accepted);
        w.Family("skymesh_pings_answered_total", "counter", "Pings from other nodes this node answered.");
        w.Sample("skymesh_pings_answered_total", "", node.PingsAnswered);
        RenderVpn(w, node);
        return w.ToString();
    }

    private static readonly (Skymesh.Control.Discovery.ServiceRecordError, string)[] ServiceRefusals =
    [
        (Skymesh.Control.Discovery.ServiceRecordError.Malformed, "malformed"),
        (Skymesh.Control.Discovery.ServiceRecordError.Expired, "expired"),
        (Skymesh.Control.Discovery.ServiceRecordError.FromTheFuture, "from_the_future"),
        (Skymesh.Control.Discovery.ServiceRecordError.Stale, "stale"),
        (Skymesh.Control.Discovery.ServiceRecordError.Replayed, "replayed"),
        (Skymesh.Control.Discovery.ServiceRecordError.BadSignature, "bad_signature"),
    ];

    private static string Label(string name, string value) =>
        $"{name}=\"{value.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal).Replace("\n", "\\n", StringComparison.Ordinal)}\"";

    private sealed class Writer
    {
        private readonly StringBuilder _text = new();

        public void Family(string name, string type, string help) =>
            _text.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n')
                .Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');

        public void Sample(string name, string labels, double value)
        {
            _text.Append(name);
            if (labels.Length > 0)
                _text.Append('{').Append(labels).Append('}');
            _text.Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }

        public override string ToString() => _text.ToString();
    }
}
