using Npgsql;
using NpgsqlTypes;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Journal;

/// <summary>
/// The journal in PostgreSQL, for operators: one table, <c>(seq bigint primary key, command bytea)</c> — the command in
/// <see cref="CommandCodec"/>'s bytes. A commit is one transaction that copies in every appended command (binary COPY),
/// committed with PostgreSQL's own durability (<c>synchronous_commit</c> on, as by default). A session advisory lock keeps
/// a second writer out for as long as the journal is open. Replay reads the table in order.
/// </summary>
public sealed class PostgresJournal : ICommandJournal
{
    private readonly NpgsqlConnection _connection;
    private readonly string _table;
    private readonly List<byte[]> _pending = [];
    private readonly Lock _append = new();
    private readonly Lock _commit = new();
    private long _records;

    private PostgresJournal(NpgsqlConnection connection, string table, long records)
    {
        _connection = connection;
        _table = table;
        _records = records;
    }

    public long Records => Interlocked.Read(ref _records);

    /// <summary>Always 0: a transaction is committed whole or not at all.</summary>
    public long TornBytes => 0;

    /// <param name="name">Names the journal (its table is <c>exchange_journal_&lt;name&gt;</c>): letters, digits and '_'.</param>
    public static PostgresJournal Open(string connectionString, string name, Action<ExchangeCommand>? replay = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(connectionString);
        if (string.IsNullOrEmpty(name) || name.Length > 40 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c == '_'))
            throw new ArgumentException("A journal name is 1 to 40 letters, digits or '_'.", nameof(name));
        var table = "exchange_journal_" + name.ToLowerInvariant();
        // One long-lived session of its own, not a pooled one: the advisory lock lives as long as the session, so closing
        // the journal must end it (a pooled connection would keep the lock after Dispose).
        var connection = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(connectionString) { Pooling = false }.ConnectionString);
        try
        {
            connection.Open();
            using (var create = new NpgsqlCommand($"CREATE TABLE IF NOT EXISTS {table} (seq bigint PRIMARY KEY, command bytea NOT NULL)", connection))
                create.ExecuteNonQuery();
            using (var lockCommand = new NpgsqlCommand("SELECT pg_try_advisory_lock(hashtext(@t))", connection))
            {
                lockCommand.Parameters.AddWithValue("t", table);
                if (lockCommand.ExecuteScalar() is not true)
                    throw new IOException($"The journal {table} is open in another process.");
            }
            long records = 0;
            using (var read = new NpgsqlCommand($"SELECT seq, command FROM {table} ORDER BY seq", connection))
            using (var reader = read.ExecuteReader())
            {
                while (reader.Read())
                {
                    var seq = reader.GetInt64(0);
                    if (seq != records + 1)
                        throw new InvalidDataException($"The journal {table} skips from {records} to {seq}.");
                    replay?.Invoke(CommandCodec.Read((byte[])reader[1]));
                    records = seq;
                }
            }
            return new PostgresJournal(connection, table, records);
        }
        catch
        {
            connection.Dispose();
            throw;
        }
    }

    public void Append(in ExchangeCommand command)
    {
        var bytes = new byte[CommandCodec.Length(command)];
        CommandCodec.Write(command, bytes);
        lock (_append)
            _pending.Add(bytes);
    }

    /// <summary>Commits what was appended before the call, in one transaction; appends go on meanwhile, into the next.</summary>
    public int Commit()
    {
        lock (_commit)
        {
            List<byte[]> batch;
            lock (_append)
            {
                if (_pending.Count == 0)
                    return 0;
                batch = [.. _pending];
                _pending.Clear();
            }
            using (var transaction = _connection.BeginTransaction())
            {
                using (var copy = _connection.BeginBinaryImport($"COPY {_table} (seq, command) FROM STDIN (FORMAT BINARY)"))
                {
                    var seq = Records;
                    foreach (var bytes in batch)
                    {
                        copy.StartRow();
                        copy.Write(++seq, NpgsqlDbType.Bigint);
                        copy.Write(bytes, NpgsqlDbType.Bytea);
                    }
                    copy.Complete();
                }
                transaction.Commit();
            }
            Interlocked.Add(ref _records, batch.Count);
            return batch.Count;
        }
    }

    public void Dispose() => _connection.Dispose();
}
