using System.Text.Json;

namespace Skymesh.Exchange.Chains;

// The state file: the whole chain as JSON, written to a temporary file (owner-only) and renamed over the old one, so a
// crash leaves the old state or the new one, never half of one.
public sealed partial class SimulatedChain
{
    private const int StateVersion = 1;

    private static readonly JsonSerializerOptions StateJson = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        RespectNullableAnnotations = true,
        RespectRequiredConstructorParameters = true,
    };

    private void Save()
    {
        if (_options.StateFile is not { } path)
            return;
        var state = new StateDocument(
            StateVersion,
            Asset,
            _serial,
            _nonce,
            _blocks.Select(b => new BlockState(b.Hash, b.Serial, b.TxIds)).ToList(),
            _txs.Values.Select(t => new TxState(t.Id, t.Kind == TxKind.Withdrawal, t.Address, t.Amount)).ToList(),
            _mempool,
            _issued,
            _broadcasts);
        OwnerOnlyFile.WriteAtomically(path, JsonSerializer.SerializeToUtf8Bytes(state, StateJson));
    }

    private void Load(string path)
    {
        StateDocument? state;
        try
        {
            state = JsonSerializer.Deserialize<StateDocument>(File.ReadAllBytes(path), StateJson);
        }
        catch (JsonException e)
        {
            throw Corrupt(path, e.Message, e);
        }
        if (state is null)
            throw Corrupt(path, "it holds no chain");
        if (state.Version != StateVersion)
            throw Corrupt(path, $"version {state.Version} is not {StateVersion}");
        if (state.Asset != Asset)
            throw new InvalidDataException($"The simulated chain's state file {path} holds a {state.Asset} chain, not {Asset}.");
        if (state.Blocks.Count == 0)
            throw Corrupt(path, "it has no genesis block");
        foreach (var tx in state.Transactions)
        {
            if (tx.Amount <= 0 || !IsValidAddress(tx.Address) || !_txs.TryAdd(tx.Id, new Tx(tx.Id, tx.Withdrawal ? TxKind.Withdrawal : TxKind.Payment, tx.Address, tx.Amount)))
                throw Corrupt(path, $"transaction {tx.Id} is invalid or repeated");
        }
        // Every transaction is in exactly one block or in the mempool; its height is where it is.
        var placed = new HashSet<string>(StringComparer.Ordinal);
        for (var height = 0; height < state.Blocks.Count; height++)
        {
            var block = state.Blocks[height];
            foreach (var id in block.Transactions)
            {
                if (!_txs.TryGetValue(id, out var tx) || !placed.Add(id))
                    throw Corrupt(path, $"block {height} holds an unknown or repeated transaction {id}");
                tx.Height = height;
            }
            _blocks.Add(new Block(block.Hash, block.Serial, [.. block.Transactions]));
        }
        foreach (var id in state.Mempool)
        {
            if (!_txs.ContainsKey(id) || !placed.Add(id))
                throw Corrupt(path, $"the mempool holds an unknown or repeated transaction {id}");
            _mempool.Add(id);
        }
        if (placed.Count != _txs.Count)
            throw Corrupt(path, "a transaction is in no block and not in the mempool");
        foreach (var (address, index) in state.Issued)
            _issued.Add(address, index);
        foreach (var (id, count) in state.Broadcasts)
            _broadcasts.Add(id, count);
        _serial = state.Serial;
        _nonce = state.Nonce;
    }

    private static InvalidDataException Corrupt(string path, string detail, Exception? inner = null) =>
        new($"The simulated chain's state file {path} is corrupt ({detail}); move it away to start a new chain.", inner);

    private sealed record StateDocument(
        int Version,
        string Asset,
        long Serial,
        long Nonce,
        List<BlockState> Blocks,
        List<TxState> Transactions,
        List<string> Mempool,
        Dictionary<string, long> Issued,
        Dictionary<string, int> Broadcasts);

    private sealed record BlockState(string Hash, long Serial, List<string> Transactions);

    private sealed record TxState(string Id, bool Withdrawal, string Address, long Amount);
}

/// <summary>Writes a file that only its owner may read, replacing the old one atomically.</summary>
internal static class OwnerOnlyFile
{
    public static void WriteAtomically(string path, ReadOnlySpan<byte> contents)
    {
        var temporary = path + ".tmp";
        // A leftover from a crash may have other permissions: the mode below applies only to a file being created.
        File.Delete(temporary);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write, Share = FileShare.None };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using (var stream = new FileStream(temporary, options))
        {
            stream.Write(contents);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
    }
}
