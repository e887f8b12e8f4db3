using Skymesh.Exchange.Journal;
using Skymesh.Exchange.Load;

namespace Skymesh.EndToEnd.Tests;

/// <summary>The exchange's journal under SIGKILL: a real `skymesh` process journaling the benchmark stream is killed mid-run.</summary>
public sealed class ExchangeJournalTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("skymesh-exchange-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("file")]
    [InlineData("postgres")]
    public async Task Every_acknowledged_command_and_every_balance_survives_a_sigkill_at_random_points(string storage)
    {
        var postgres = Environment.GetEnvironmentVariable("SKYMESH_TEST_POSTGRES");
        if (storage == "postgres" && string.IsNullOrEmpty(postgres))
            Assert.Skip("no PostgreSQL server (test.sh starts one and sets SKYMESH_TEST_POSTGRES)");
        var run = Guid.NewGuid().ToString("N")[..10];
        const int owners = 200, count = 400_000;
        var commands = LoadScenario.Commands(seed: 1, owners, count);
        var random = new Random(5);
        for (var round = 0; round < 3; round++)
        {
            var journal = Path.Combine(_dir, $"journal-{round}");
            var name = $"kill_{run}_{round}";
            string[] where = storage == "file" ? ["--journal", journal] : ["--journal-postgres", postgres!, "--journal-name", name];
            await using var writer = Skymesh.Start(["bench", "exchange", "--commands", $"{count}", "--owners", $"{owners}", "--seed", "1",
                "--repeat", "1", "--latency-rate", "0", .. where, "--commit-every", "200", "--show-commits"]);
            // Killed after a random number of commits: the last "committed N" it printed is what it had acknowledged.
            var commits = random.Next(5, 400);
            long acknowledged = 0;
            for (var i = 0; i < commits; i++)
                acknowledged = long.Parse((await writer.WaitForLineAsync("committed ", TimeSpan.FromSeconds(120))).Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture);
            await writer.CrashAsync(TimeSpan.FromSeconds(30));

            // Restarted from the journal: at least every acknowledged command is there (a commit under way when the
            // process died may have reached the disk too), and the state is exactly what those commands make.
            using var recovered = storage == "file"
                ? JournaledExchange.Open(journal, LoadScenario.Assets, [LoadScenario.Market])
                : await OpenPostgresAsync(postgres!, name);
            var replayed = recovered.Recovered.Commands;
            Assert.True(replayed >= acknowledged, $"round {round}: {acknowledged} commands acknowledged, {replayed} recovered");
            var expected = LoadScenario.NewEngine();
            for (var i = 0; i < replayed; i++)
                expected.Execute(commands[i]);
            Assert.Equal(expected.StateHash(), recovered.Engine.StateHash());
            recovered.Engine.CheckInvariants();
            TestContext.Current.SendDiagnosticMessage($"{storage} round {round}: killed after {acknowledged:N0} acknowledged, {replayed:N0} recovered, {recovered.Recovered.TornBytes} torn bytes cut");
        }
    }

    /// <summary>Opens the PostgreSQL journal once the killed writer's session (and its lock) is gone: the server notices within moments.</summary>
    private static async Task<JournaledExchange> OpenPostgresAsync(string connection, string name)
    {
        using var poll = new PeriodicTimer(TimeSpan.FromMilliseconds(100));
        for (var attempt = 0; ; attempt++)
        {
            try
            {
                return JournaledExchange.OpenPostgres(connection, name, LoadScenario.Assets, [LoadScenario.Market]);
            }
            catch (IOException) when (attempt < 100)
            {
                await poll.WaitForNextTickAsync(TestContext.Current.CancellationToken);
            }
        }
    }
}
