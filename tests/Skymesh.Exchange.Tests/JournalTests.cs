using Skymesh.Exchange.Journal;
using Skymesh.Exchange.Load;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Tests;

public sealed class JournalTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("skymesh-journal-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private readonly string _run = Guid.NewGuid().ToString("N")[..12];

    private string PathOf(string name) => Path.Combine(_dir, name);

    /// <summary>The PostgreSQL server test.sh starts (SKYMESH_TEST_POSTGRES); the test is skipped without one.</summary>
    internal static string Postgres() =>
        Environment.GetEnvironmentVariable("SKYMESH_TEST_POSTGRES") is { Length: > 0 } connection
            ? connection
            : throw Xunit.Sdk.SkipException.ForSkip("no PostgreSQL server (test.sh starts one and sets SKYMESH_TEST_POSTGRES)");

    /// <summary>The journal called <paramref name="name"/> in this test's storage (names are unique per test run).</summary>
    private JournaledExchange Open(string storage, string name, string? snapshot = null) => storage == "postgres"
        ? JournaledExchange.OpenPostgres(Postgres(), $"{name}_{_run}", LoadScenario.Assets, [LoadScenario.Market], snapshotPath: snapshot)
        : JournaledExchange.Open(PathOf(name), LoadScenario.Assets, [LoadScenario.Market], snapshotPath: snapshot);

    [Theory]
    [InlineData("file")]
    [InlineData("postgres")]
    public void A_journal_replays_into_the_state_its_engine_had_at_the_last_commit(string storage)
    {
        var commands = LoadScenario.Commands(seed: 3, owners: 100, count: 50_000);
        ulong committedHash;
        using (var exchange = Open(storage, "j"))
        {
            for (var i = 0; i < commands.Length; i++)
            {
                exchange.Submit(commands[i]);
                if (i % 777 == 0)
                    exchange.Commit();
            }
            exchange.Commit();
            committedHash = exchange.Engine.StateHash();
            // Submitted after the last commit: not durable, not acknowledged, and gone after a restart.
            exchange.Submit(ExchangeCommand.Deposit(0, 0, 5, "never committed"));
        }
        using var reopened = Open(storage, "j");
        Assert.Equal((commands.LongLength, 0L), reopened.Recovered);
        Assert.Equal(committedHash, reopened.Engine.StateHash());
        reopened.Engine.CheckInvariants();
        // And it goes on from there.
        reopened.Submit(ExchangeCommand.Deposit(0, 0, 5, "after the restart"));
        Assert.Equal(1, reopened.Commit());
    }

    [Theory]
    [InlineData("file")]
    [InlineData("postgres")]
    public void A_snapshot_spares_the_replay_of_what_it_covers_and_lands_on_the_same_state(string storage)
    {
        var commands = LoadScenario.Commands(seed: 5, owners: 100, count: 40_000);
        var snapshot = PathOf("snapshot");
        ulong hash;
        using (var exchange = Open(storage, "s", snapshot))
        {
            for (var i = 0; i < commands.Length; i++)
            {
                exchange.Submit(commands[i]);
                if (i % 500 == 0)
                    exchange.Commit();
                if (i == 30_000)
                    exchange.SaveSnapshot();
            }
            exchange.Commit();
            hash = exchange.Engine.StateHash();
        }
        using var reopened = Open(storage, "s", snapshot);
        Assert.Equal(commands.Length - 30_001L, reopened.Recovered.Commands);
        Assert.Equal(hash, reopened.Engine.StateHash());
        Assert.Equal(commands.LongLength, reopened.Committed);
    }

    [Fact]
    public void A_torn_or_corrupt_tail_is_cut_off_and_everything_before_it_kept()
    {
        var commands = LoadScenario.Commands(seed: 4, owners: 20, count: 2_000);
        var path = PathOf("torn");
        var hashes = new List<ulong>();
        using (var exchange = JournaledExchange.Open(path, LoadScenario.Assets, [LoadScenario.Market]))
        {
            foreach (var command in commands)
            {
                exchange.Submit(command);
                exchange.Commit();
                hashes.Add(exchange.Engine.StateHash());
            }
        }
        var whole = File.ReadAllBytes(path);

        // A crash in the middle of the last write: half a record.
        File.WriteAllBytes(path, whole[..^20]);
        using (var torn = JournaledExchange.Open(path, LoadScenario.Assets, [LoadScenario.Market]))
        {
            Assert.Equal(commands.Length - 1, torn.Recovered.Commands);
            Assert.True(torn.Recovered.TornBytes > 0);
            Assert.Equal(hashes[^2], torn.Engine.StateHash());
        }
        // The cut is made on disk: opening again finds a whole journal.
        using (var again = JournaledExchange.Open(path, LoadScenario.Assets, [LoadScenario.Market]))
            Assert.Equal((commands.Length - 1L, 0L), again.Recovered);

        // A flipped bit in a record in the middle: that record and everything after it are cut off, never misread.
        var corrupt = (byte[])whole.Clone();
        corrupt[whole.Length / 2] ^= 0x10;
        File.WriteAllBytes(path, corrupt);
        using var cut = JournaledExchange.Open(path, LoadScenario.Assets, [LoadScenario.Market]);
        Assert.InRange(cut.Recovered.Commands, 1, commands.Length - 2);
        Assert.Equal(hashes[(int)cut.Recovered.Commands - 1], cut.Engine.StateHash());
    }

    [Theory]
    [InlineData("file")]
    [InlineData("postgres")]
    public void Only_one_writer_holds_a_journal(string storage)
    {
        using var first = Open(storage, "one");
        Assert.Throws<IOException>(() => Open(storage, "one"));
    }

    [Fact]
    public void A_foreign_file_is_refused_and_a_journal_file_is_its_owners_only()
    {
        using var first = JournaledExchange.Open(PathOf("one"), LoadScenario.Assets, [LoadScenario.Market]);
        File.WriteAllText(PathOf("foreign"), "not a journal");
        Assert.Throws<InvalidDataException>(() => JournaledExchange.Open(PathOf("foreign"), LoadScenario.Assets, [LoadScenario.Market]));
        if (!OperatingSystem.IsWindows())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(PathOf("one")));
    }
}

public sealed class SnapshotTests
{
    [Fact]
    public void An_engine_read_from_its_snapshot_has_the_same_state_and_goes_on_exactly_as_the_original()
    {
        var commands = LoadScenario.Commands(seed: 9, owners: 300, count: 120_000);
        var original = LoadScenario.NewEngine();
        for (var i = 0; i < 60_000; i++)
            original.Execute(commands[i]);
        using var snapshot = new MemoryStream();
        original.WriteSnapshot(snapshot);
        snapshot.Position = 0;
        var restored = MatchingEngine.ReadSnapshot(snapshot, LoadScenario.Assets, [LoadScenario.Market]);
        Assert.Equal(original.StateHash(), restored.StateHash());
        Assert.Equal(original.Book(0, Side.Buy), restored.Book(0, Side.Buy));

        // The same commands after it: the same state at every step (queues, priorities, keys and counters all came back).
        for (var i = 60_000; i < commands.Length; i++)
        {
            original.Execute(commands[i]);
            restored.Execute(commands[i]);
            if (i % 10_000 == 0)
                Assert.Equal(original.StateHash(), restored.StateHash());
        }
        Assert.Equal(original.StateHash(), restored.StateHash());

        // A snapshot cut short is refused, not half read.
        snapshot.SetLength(snapshot.Length - 10);
        snapshot.Position = 0;
        Assert.ThrowsAny<Exception>(() => MatchingEngine.ReadSnapshot(snapshot, LoadScenario.Assets, [LoadScenario.Market]));
    }
}
