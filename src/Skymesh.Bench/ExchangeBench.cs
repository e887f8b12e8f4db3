using System.Diagnostics;
using System.Globalization;
using Skymesh.Exchange;
using Skymesh.Exchange.Journal;
using Skymesh.Exchange.Load;
using Skymesh.Exchange.Matching;

namespace Skymesh.Bench;

public sealed class ExchangeBenchOptions
{
    /// <summary>Commands in the measured stream (after the warm-up pass over the same stream).</summary>
    public int Commands { get; init; } = 3_000_000;

    public int Owners { get; init; } = 1000;

    public int Seed { get; init; } = 1;

    /// <summary>Commands offered per second in the latency run (0 skips it).</summary>
    public double LatencyRate { get; init; } = 1_000_000;

    /// <summary>Measured runs of the throughput test; the median is reported.</summary>
    public int Repeat { get; init; } = 5;

    /// <summary>A journal file to create: the stream is also run journaled, then recovered from it.</summary>
    public string? Journal { get; init; }

    /// <summary>A PostgreSQL connection string: the journaled run goes to the journal <see cref="JournalName"/> there instead.</summary>
    public string? JournalPostgres { get; init; }

    public string JournalName { get; init; } = "bench";

    /// <summary>Commands per group commit (one write and one fsync).</summary>
    public int CommitEvery { get; init; } = 1000;

    /// <summary>Print "committed N" after every commit (crash tests read it: N commands are durable).</summary>
    public bool ShowCommits { get; init; }
}

/// <summary>
/// <c>skymesh bench exchange</c>: the matching engine on exchange-core's command mix, in process on one thread.
/// A stream is generated once (a generating engine answers which orders are alive), then replayed into fresh engines:
/// replaying the same commands gives the same work, so the timing contains the engine and nothing else.
/// </summary>
public static class ExchangeBench
{
    private sealed class Counter : IExchangeEvents
    {
        public long Trades;

        public void On(in ExchangeEvent e)
        {
            if (e.Kind == EventKind.Trade)
                Trades++;
        }
    }

    public static int Run(ExchangeBenchOptions options, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(output);
        var c = CultureInfo.InvariantCulture;
        output.WriteLine(string.Format(c, "skymesh bench exchange: {0} CPUs ({1}), .NET {2}; {3:N0} commands, {4:N0} owners, seed {5}",
            Environment.ProcessorCount, ProcessProbe.CpuModel(), Environment.Version, options.Commands, options.Owners, options.Seed));
        var (funding, stream, mix) = Generate(options);
        output.WriteLine($"  stream: {mix}");

        // Throughput: replay into fresh engines; the first pass warms the JIT (tiered PGO) and is not counted.
        var rates = new List<double>();
        long allocated = 0, trades = 0;
        for (var run = 0; run <= options.Repeat; run++)
        {
            var (engine, counter) = Fresh(options, funding);
            var before = GC.GetAllocatedBytesForCurrentThread();
            var started = Stopwatch.GetTimestamp();
            for (var i = 0; i < stream.Length; i++)
                engine.Execute(stream[i]);
            var seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            var bytes = GC.GetAllocatedBytesForCurrentThread() - before;
            if (run == 0)
                continue;
            rates.Add(stream.Length / seconds);
            allocated = bytes;
            trades = counter.Trades;
            output.WriteLine(string.Format(c, "  run {0}: {1:N0} commands/s ({2:0.000} s), {3:N0} bytes allocated, {4:N0} trades, {5} resting at the end",
                run, stream.Length / seconds, seconds, bytes, counter.Trades, engine.RestingOrders));
        }
        rates.Sort();
        var json = new JsonLine();
        json.Add("workload", "exchange");
        json.Add("commands", stream.Length);
        json.Add("owners", options.Owners);
        json.Add("trades", trades);
        json.Add("matching_orders_per_sec", rates[rates.Count / 2], 0);
        json.Add("matching_runs_per_sec", rates.Select(r => Math.Round(r)).ToArray());
        json.Add("allocated_bytes_per_order", (double)allocated / stream.Length, 3);

        if (options.LatencyRate > 0)
        {
            // Latency at a fixed offered rate, coordinated omission counted: command i is due at start + i / rate, and its
            // latency runs from when it was due, so a slow command delays (and is charged to) those behind it.
            var (engine, _) = Fresh(options, funding);
            var anchor = Paced(stream.Length, options.LatencyRate, null, stream);
            var latencies = Paced(stream.Length, options.LatencyRate, engine, stream);
            static double Us(long[] sorted, double q) => sorted[Math.Min(sorted.Length - 1, (int)(q * sorted.Length))] * 1e6 / Stopwatch.Frequency;
            foreach (var (name, sorted) in new[] { ("the same paced loop doing nothing (this machine's own pauses)", anchor), ("the engine", latencies) })
            {
                output.WriteLine(string.Format(c, "  latency at {0:N0} commands/s offered, {1}: p50 {2:0.00} us, p99 {3:0.00} us, p99.9 {4:0.00} us, p99.99 {5:0.00} us, max {6:0.00} us",
                    options.LatencyRate, name, Us(sorted, 0.5), Us(sorted, 0.99), Us(sorted, 0.999), Us(sorted, 0.9999), sorted[^1] * 1e6 / Stopwatch.Frequency));
            }
            json.Add("latency_offered_per_sec", options.LatencyRate, 0);
            json.Add("p50_us_at_1m_per_sec", Us(latencies, 0.5), 2);
            json.Add("p99_us_at_1m_per_sec", Us(latencies, 0.99), 2);
            json.Add("p9999_us_at_1m_per_sec", Us(latencies, 0.9999), 2);
            json.Add("empty_loop_p99_us", Us(anchor, 0.99), 2);
            json.Add("empty_loop_p9999_us", Us(anchor, 0.9999), 2);
        }
        if (options.JournalPostgres is { } connection)
            Journaled(options, () => JournaledExchange.OpenPostgres(connection, options.JournalName, LoadScenario.Assets, [LoadScenario.Market]), "postgresql", funding, stream, json, output);
        else if (options.Journal is { } path)
        {
            if (File.Exists(path))
                throw new BenchException($"{path} exists; give the path of a new journal.");
            Journaled(options, () => JournaledExchange.Open(path, LoadScenario.Assets, [LoadScenario.Market]), "file", funding, stream, json, output);
        }
        output.WriteLine(json.ToJson());
        return 0;
    }

    /// <summary>
    /// The stream journaled with a group commit every <see cref="ExchangeBenchOptions.CommitEvery"/> commands, then the
    /// journal replayed into a fresh engine, which must reach the same state hash.
    /// </summary>
    private static void Journaled(ExchangeBenchOptions options, Func<JournaledExchange> open, string storage, ExchangeCommand[] setup, ExchangeCommand[] stream,
        JsonLine json, TextWriter output)
    {
        var c = CultureInfo.InvariantCulture;
        ulong hash;
        var batches = new List<long>();
        double seconds;
        using (var exchange = open())
        {
            if (exchange.Committed > 0)
                throw new BenchException($"The {storage} journal already holds {exchange.Committed:N0} commands; give a new one.");
            foreach (var command in setup)
                exchange.Submit(command);
            exchange.Commit();
            var started = Stopwatch.GetTimestamp();
            var batchStart = started;
            for (var i = 0; i < stream.Length; i++)
            {
                exchange.Submit(stream[i]);
                if ((i + 1) % options.CommitEvery != 0 && i != stream.Length - 1)
                    continue;
                exchange.Commit();
                var now = Stopwatch.GetTimestamp();
                // Every command of the batch is acknowledged when the commit returns: the first waited the longest.
                batches.Add(now - batchStart);
                batchStart = now;
                if (options.ShowCommits)
                {
                    output.WriteLine($"committed {exchange.Committed}");
                    output.Flush();
                }
            }
            seconds = Stopwatch.GetElapsedTime(started).TotalSeconds;
            hash = exchange.Engine.StateHash();
        }
        batches.Sort();
        var p99 = batches[Math.Min(batches.Count - 1, (int)(0.99 * batches.Count))] * 1e6 / Stopwatch.Frequency;
        output.WriteLine(string.Format(c, "  journaled ({0}): {1:N0} commands/s, a commit every {2:N0} commands ({3:N0} commits), durable acknowledgement p50 {4:0} us, p99 {5:0} us",
            storage, stream.Length / seconds, options.CommitEvery, batches.Count, batches[batches.Count / 2] * 1e6 / Stopwatch.Frequency, p99));
        var replayStarted = Stopwatch.GetTimestamp();
        using var recovered = open();
        var replaySeconds = Stopwatch.GetElapsedTime(replayStarted).TotalSeconds;
        var same = recovered.Engine.StateHash() == hash;
        output.WriteLine(string.Format(c, "  recovery: {0:N0} commands replayed in {1:0.000} s = {2:N0} commands/s; state hash {3}",
            recovered.Recovered.Commands, replaySeconds, recovered.Recovered.Commands / replaySeconds, same ? "identical" : "DIFFERENT"));
        json.Add("journal", storage);
        json.Add("journaled_orders_per_sec", stream.Length / seconds, 0);
        json.Add("commit_every", options.CommitEvery);
        json.Add("durable_ack_p99_us", p99, 0);
        json.Add("recovery_events_per_sec", recovered.Recovered.Commands / replaySeconds, 0);
        json.Add("recovered_state_identical", same);
        if (!same)
            throw new BenchException("The engine replayed from the journal did not reach the state hash it had.");
    }

    /// <summary>
    /// Runs <paramref name="stream"/> (or, with no engine, nothing) at a fixed rate and returns each command's latency in
    /// Stopwatch ticks, sorted: from when it was due (start + i / rate), so a pause delays and is charged to those behind it.
    /// </summary>
    private static long[] Paced(int count, double rate, MatchingEngine? engine, ExchangeCommand[] stream)
    {
        var latencies = new long[count];
        var interval = Stopwatch.Frequency / rate;
        var start = Stopwatch.GetTimestamp();
        for (var i = 0; i < count; i++)
        {
            var due = start + (long)(i * interval);
            while (Stopwatch.GetTimestamp() < due)
            {
            }
            engine?.Execute(stream[i]);
            latencies[i] = Stopwatch.GetTimestamp() - due;
        }
        Array.Sort(latencies);
        return latencies;
    }

    private static (MatchingEngine Engine, Counter Events) Fresh(ExchangeBenchOptions options, ExchangeCommand[] setup)
    {
        var counter = new Counter();
        var engine = LoadScenario.NewEngine(counter);
        foreach (var command in setup)
            engine.Execute(command);
        return (engine, counter);
    }

    /// <summary>The scenario's commands: the setup (owners opened and funded) and the measured stream.</summary>
    private static (ExchangeCommand[] Setup, ExchangeCommand[] Stream, string Mix) Generate(ExchangeBenchOptions options)
    {
        var all = LoadScenario.Commands(options.Seed, options.Owners, options.Commands);
        var setup = all[..^options.Commands];
        var stream = all[^options.Commands..];
        var (engine, _) = Fresh(options, all);
        var kinds = new long[Enum.GetValues<CommandKind>().Length];
        long gtc = 0, immediate = 0;
        foreach (var command in stream)
        {
            kinds[(int)command.Kind]++;
            if (command.Kind == CommandKind.Place)
            {
                if (command.TimeInForce == TimeInForce.Gtc && command.Type == OrderType.Limit)
                    gtc++;
                else
                    immediate++;
            }
        }
        double Share(long n) => 100.0 * n / stream.Length;
        var mix = string.Format(CultureInfo.InvariantCulture, "{0:0.0} % limit GTC, {1:0.0} % IOC/FOK/market, {2:0.0} % cancel, {3:0.0} % amend, {4:0.0} % other; {5} resting orders over {6} + {7} levels at the end",
            Share(gtc), Share(immediate), Share(kinds[(int)CommandKind.Cancel]), Share(kinds[(int)CommandKind.Amend]),
            Share(kinds[(int)CommandKind.CancelAll] + kinds[(int)CommandKind.Deposit] + kinds[(int)CommandKind.Withdraw]),
            engine.RestingOrders, engine.Book(0, Side.Buy).Select(o => o.Price).Distinct().Count(), engine.Book(0, Side.Sell).Select(o => o.Price).Distinct().Count());
        return (setup, stream, mix);
    }
}
