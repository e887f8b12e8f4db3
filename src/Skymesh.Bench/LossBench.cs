using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using Skymesh.Node;

namespace Skymesh.Bench;

/// <summary>Settings of <c>skymesh bench mesh --loss …</c>.</summary>
public sealed class LossBenchOptions
{
    public SkymeshLaunch? Launch { get; init; }

    /// <summary>Loss per hop (each direction) of each point of the curve.</summary>
    public IReadOnlyList<double> Losses { get; init; } = [0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2];

    public double Duplication { get; init; } = 0.01;

    public double Reordering { get; init; } = 0.05;

    public TimeSpan Delay { get; init; } = TimeSpan.FromMilliseconds(1);

    public int Mtu { get; init; } = 1400;

    /// <summary>Measured time of each point.</summary>
    public TimeSpan Duration { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>Also measure every point with link recovery off (end-to-end recovery alone).</summary>
    public bool CompareWithoutRecovery { get; init; } = true;

    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(120);

    public void Validate()
    {
        if (Launch is null)
            throw new ArgumentException("The bench needs a way to start `skymesh node` children.");
        if (Losses.Count == 0 || Losses.Any(l => l is < 0 or >= 1))
            throw new ArgumentException("--loss takes shares from 0 to below 1, e.g. 0,0.05,0.1.");
        if (Duplication is < 0 or > 1 || Reordering is < 0 or > 1)
            throw new ArgumentException("--duplicate and --reorder are shares from 0 to 1.");
        if (Mtu is < 1232 or > 65_507)
            throw new ArgumentException("--mtu must be 1232 to 65507.");
        if (Duration < TimeSpan.FromSeconds(1) || Duration > TimeSpan.FromHours(1))
            throw new ArgumentException("--duration must be 1 to 3600 seconds.");
    }
}

/// <summary>
/// One forwarded stream over three hops of UDP links, each hop through an <see cref="ImpairingRelay"/> that loses,
/// duplicates, reorders and delays datagrams: throughput against loss per hop, beside the Mathis bound for standard
/// TCP (Reno) at the same end-to-end loss and round trip. A chain A-B-C-D of <c>skymesh node</c> processes with a
/// static path; a port forward on A carries a TCP stream from this process to a sink in this process, which checks
/// every byte.
/// </summary>
public static class LossBench
{
    private static readonly CultureInfo C = CultureInfo.InvariantCulture;

    public static async Task<int> RunAsync(LossBenchOptions options, TextWriter output, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        options.Validate();
        var json = new JsonLine();
        json.Add("bench", "mesh-loss");
        json.Add("date", DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", C));
        json.Add("cpus", Environment.ProcessorCount);
        json.Add("mtu", options.Mtu);
        json.Add("duplication", options.Duplication);
        json.Add("reordering", options.Reordering);
        json.Add("delay_ms", options.Delay.TotalMilliseconds);
        json.Add("duration_s", options.Duration.TotalSeconds);
        var points = new List<Dictionary<string, object?>>();
        output.WriteLine(string.Format(C, "skymesh bench mesh --loss: 3 hops of UDP links (MTU {0}), each through a relay with {1:P1} duplication, {2:P1} reordering, {3:0.#} ms delay; {4:0.#} s per point",
            options.Mtu, options.Duplication, options.Reordering, options.Delay.TotalMilliseconds, options.Duration.TotalSeconds));
        output.WriteLine("  loss/hop   e2e loss   path RTT   recovery on MB/s   off MB/s   Mathis MB/s   on/Mathis   link frames resent");
        foreach (var recovery in options.CompareWithoutRecovery ? new[] { true, false } : [true])
        {
            await using var chain = await LossyChain.StartAsync(options, recovery, output, cancellationToken);
            foreach (var loss in options.Losses)
            {
                var point = await chain.MeasureAsync(loss, cancellationToken);
                var mathis = point.MathisBytesPerSecond;
                // No loss has no Mathis bound (it is infinite): a dash here, null in the JSON.
                var bounded = double.IsFinite(mathis);
                output.WriteLine(string.Format(C, "  {0,7:P1}   {1,7:P1}   {2,6:0.0} ms   {3}   {4,12}   {5,9}   {6:N0}  (recovery {7})",
                    loss, point.EndToEndLoss, point.Rtt.TotalMilliseconds, recovery ? $"{point.BytesPerSecond / 1e6,16:0.00}" : $"{"",16}{point.BytesPerSecond / 1e6,10:0.00}",
                    bounded ? (mathis / 1e6).ToString("0.00", C) : "-", bounded ? (point.BytesPerSecond / mathis).ToString("0.00", C) + "x" : "-",
                    point.LinkFramesResent, recovery ? "on" : "off"));
                points.Add(new Dictionary<string, object?>
                {
                    ["loss_per_hop"] = loss,
                    ["link_recovery"] = recovery,
                    ["bytes_per_sec"] = Math.Round(point.BytesPerSecond),
                    ["rtt_ms"] = Math.Round(point.Rtt.TotalMilliseconds, 2),
                    ["e2e_loss"] = Math.Round(point.EndToEndLoss, 4),
                    ["mathis_bytes_per_sec"] = bounded ? Math.Round(mathis) : null,
                    ["vs_mathis"] = bounded ? Math.Round(point.BytesPerSecond / mathis, 2) : null,
                    ["link_frames_resent"] = point.LinkFramesResent,
                    ["bytes_verified"] = point.Verified,
                });
            }
        }
        json.Add("points", points);
        output.WriteLine(json.ToJson());
        return 0;
    }

    internal sealed record Point(double BytesPerSecond, TimeSpan Rtt, double EndToEndLoss, double MathisBytesPerSecond, long LinkFramesResent, long Verified);

    /// <summary>The four nodes, the three relays, the path, the forward and the sink.</summary>
    internal sealed class LossyChain : IAsyncDisposable
    {
        private readonly List<NodeProcess> _nodes;
        private readonly List<ImpairingRelay> _relays;
        private readonly TcpListener _sink;
        private readonly IPEndPoint _listen;
        private readonly LossBenchOptions _options;
        private readonly CancellationTokenSource _forward;

        private LossyChain(LossBenchOptions options, List<NodeProcess> nodes, List<ImpairingRelay> relays, TcpListener sink, IPEndPoint listen, CancellationTokenSource forward)
        {
            _options = options;
            _nodes = nodes;
            _relays = relays;
            _sink = sink;
            _listen = listen;
            _forward = forward;
        }

        public static async Task<LossyChain> StartAsync(LossBenchOptions options, bool recovery, TextWriter output, CancellationToken cancellationToken)
        {
            var nodes = new List<NodeProcess>();
            var relays = new List<ImpairingRelay>();
            var sink = new TcpListener(IPAddress.Loopback, 0);
            var forward = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            try
            {
                string[] names = ["A", "B", "C", "D"];
                var started = names.Select((name, i) => NodeProcess.StartAsync(options.Launch!, $"node {name}", encrypt: true,
                    i == names.Length - 1 ? ["127.0.0.1:*"] : [], output, options.Timeout, options.Mtu, recovery, cancellationToken)).ToList();
                try
                {
                    await Task.WhenAll(started);
                }
                finally
                {
                    nodes.AddRange(started.Where(t => t.IsCompletedSuccessfully).Select(t => t.Result));
                }
                // Linked while clean, then impaired: the handshake is not what is measured.
                for (var i = 0; i + 1 < nodes.Count; i++)
                {
                    var relay = new ImpairingRelay(nodes[i + 1].Udp, new ImpairmentSettings());
                    relays.Add(relay);
                    await nodes[i].LinkToAsync(nodes[i + 1], relay.FrontEnd, cancellationToken).WaitAsync(options.Timeout, cancellationToken);
                }
                await StaticPath.InstallAsync(nodes.Select(n => n.Api).ToList(), cancellationToken).WaitAsync(options.Timeout, cancellationToken);
                sink.Start();
                IPEndPoint? listen = null;
                var target = (IPEndPoint)sink.LocalEndpoint;
                await foreach (var e in nodes[0].Api.RunAppAsync("forwards", new ForwardRequest("127.0.0.1:0", nodes[^1].Address, target.ToString(), true), forward.Token))
                {
                    listen = e.Listen is { } l && IPEndPoint.TryParse(l, out var parsed) ? parsed : null;
                    break;
                }
                if (listen is null)
                    throw new BenchException("node A did not say where its forward listens.");
                return new LossyChain(options, nodes, relays, sink, listen, forward);
            }
            catch
            {
                await forward.CancelAsync();
                forward.Dispose();
                sink.Stop();
                foreach (var relay in relays)
                    relay.Dispose();
                foreach (var node in nodes)
                    await node.DisposeAsync();
                throw;
            }
        }

        public async Task<Point> MeasureAsync(double loss, CancellationToken cancellationToken)
        {
            var settings = new ImpairmentSettings { Loss = loss, Duplication = _options.Duplication, Reordering = _options.Reordering, Delay = _options.Delay };
            foreach (var relay in _relays)
                relay.Settings = settings;
            var rtt = await MeasureRttAsync(cancellationToken);
            var resentBefore = await ResentAsync(cancellationToken);
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var accepting = _sink.AcceptTcpClientAsync(stop.Token).AsTask();
            using var client = new TcpClient { NoDelay = true };
            await client.ConnectAsync(_listen, cancellationToken);
            using var server = await accepting.WaitAsync(_options.Timeout, cancellationToken);
            // The source writes a known sequence as fast as the path takes it; the sink checks every byte of it.
            var writer = Task.Run(async () =>
            {
                var pattern = Pattern(1 << 16);
                var stream = client.GetStream();
                try
                {
                    while (!stop.IsCancellationRequested)
                        await stream.WriteAsync(pattern, stop.Token);
                }
                catch (Exception e) when (e is OperationCanceledException or IOException or SocketException)
                {
                }
            }, CancellationToken.None);
            var received = 0L;
            var expected = Pattern(1 << 16);
            var buffer = new byte[1 << 16];
            var input = server.GetStream();
            var clock = Stopwatch.StartNew();
            var deadline = _options.Duration;
            try
            {
                while (clock.Elapsed < deadline)
                {
                    using var slice = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    slice.CancelAfter(deadline - clock.Elapsed + TimeSpan.FromMilliseconds(1));
                    int n;
                    try
                    {
                        n = await input.ReadAsync(buffer, slice.Token);
                    }
                    catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                    {
                        break;
                    }
                    if (n == 0)
                        throw new BenchException($"the forwarded stream ended after {received:N0} bytes at {loss:P1} loss per hop.");
                    for (var i = 0; i < n; i++)
                    {
                        if (buffer[i] != expected[(int)((received + i) % expected.Length)])
                            throw new BenchException($"byte {received + i:N0} of the forwarded stream differs at {loss:P1} loss per hop.");
                    }
                    received += n;
                }
            }
            finally
            {
                var elapsed = clock.Elapsed;
                await stop.CancelAsync();
                client.Close();
                await writer;
                deadline = elapsed;
            }
            var resent = await ResentAsync(cancellationToken) - resentBefore;
            var endToEnd = 1 - Math.Pow(1 - loss, 3);
            // Mathis et al.: rate ≈ MSS / RTT · sqrt(3/2) / sqrt(p), for Reno at loss p; here p is the path's
            // end-to-end loss and MSS the path's largest segment.
            var mss = _options.Mtu - 12 - 8 - 16 - 40;
            var mathis = endToEnd > 0 ? mss / rtt.TotalSeconds * Math.Sqrt(1.5) / Math.Sqrt(endToEnd) : double.PositiveInfinity;
            return new Point(received / deadline.TotalSeconds, rtt, endToEnd, mathis, resent, received);
        }

        /// <summary>The path's round trip at this impairment: the median of pings that came back.</summary>
        private async Task<TimeSpan> MeasureRttAsync(CancellationToken cancellationToken)
        {
            var samples = new List<double>();
            for (var i = 0; i < 20 && samples.Count < 9; i++)
            {
                try
                {
                    var reply = await _nodes[0].Api.PingAsync(_nodes[^1].Address, 64, 1000, cancellationToken);
                    samples.Add(reply.RttMicroseconds / 1000);
                }
                catch (NodeApiException)
                {
                    // Lost on the way: the next one.
                }
            }
            if (samples.Count == 0)
                throw new BenchException("no ping crossed the impaired path.");
            samples.Sort();
            return TimeSpan.FromMilliseconds(samples[samples.Count / 2]);
        }

        private async Task<long> ResentAsync(CancellationToken cancellationToken)
        {
            long total = 0;
            foreach (var node in _nodes)
                total += (await node.Api.LinksAsync(cancellationToken)).Sum(l => l.FramesRetransmitted);
            return total;
        }

        private static byte[] Pattern(int length)
        {
            var bytes = new byte[length];
            new Random(2015).NextBytes(bytes);
            return bytes;
        }

        public async ValueTask DisposeAsync()
        {
            await _forward.CancelAsync();
            _forward.Dispose();
            _sink.Stop();
            foreach (var relay in _relays)
                relay.Dispose();
            foreach (var node in _nodes)
                await node.DisposeAsync();
        }
    }
}
