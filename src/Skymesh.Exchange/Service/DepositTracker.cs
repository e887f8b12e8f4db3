using Microsoft.Extensions.Logging;
using Skymesh.Exchange.Chains;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Service;

/// <summary>
/// Follows one chain's deposits (docs/exchange-api.md, "Deposits"): each scan reads the outputs paying the exchange's
/// deposit addresses in the blocks that may still change, records them (seen, confirming k/N), credits each once it has
/// <see cref="Confirmations"/> confirmations and takes a credit back when a reorganisation leaves it with fewer (or
/// removes it). Every credit and reversal is an engine command with an idempotency key made from the output and how many
/// times it was credited before, run before the record is updated — so a crash, a restart or a repeated scan can never
/// credit an output twice.
/// </summary>
internal sealed partial class DepositTracker(IChainAdapter chain, FundsStore store, EngineLoop loop, int assetIndex, int confirmations, int watchDepth,
    TimeProvider time, ILogger logger)
{
    private long _polls;
    private long _failures;
    private string? _lastError;

    public IChainAdapter Chain => chain;

    public string Asset => chain.Asset;

    /// <summary>Confirmations a deposit needs before it is credited.</summary>
    public int Confirmations => confirmations;

    public long Polls => Interlocked.Read(ref _polls);

    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>Why the last scan failed (the chain was unreachable), or null when it succeeded.</summary>
    public string? LastError => Volatile.Read(ref _lastError);

    /// <summary>Scans the chain once and applies what changed; false when the chain could not be reached. One caller at a time.</summary>
    public async Task<bool> PollAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _polls);
        ChainScan scan;
        var previous = store.ScannedTip(Asset) ?? 0;
        var from = Math.Max(0, previous - watchDepth + 1);
        try
        {
            scan = await chain.ScanAsync(from, cancellationToken);
        }
        catch (ChainUnavailableException e)
        {
            Interlocked.Increment(ref _failures);
            Volatile.Write(ref _lastError, e.Message);
            Log.ChainUnavailable(logger, Asset, e.Message);
            return false;
        }
        Volatile.Write(ref _lastError, null);
        var owners = store.AddressOwners(Asset);
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        var present = new HashSet<(string, int)>();
        foreach (var output in scan.Outputs)
        {
            if (!owners.TryGetValue(output.Address, out var owner))
                continue;
            present.Add((output.TxId, output.Index));
            var confirmed = output.Height is { } height ? Math.Max(0, scan.TipHeight - height + 1) : 0;
            var known = store.FindDeposit(Asset, output.TxId, output.Index)
                ?? new DepositRecord(Asset, output.TxId, output.Index, output.Address, owner, output.Amount, null, 0, DepositState.Seen, 0, now, now);
            await ApplyAsync(known with { Height = output.Height, Confirmations = confirmed, Updated = now }, present: true);
        }
        // What the chain no longer shows, within the blocks it could have changed, is gone.
        foreach (var watched in store.WatchedDeposits(Asset, from))
        {
            if (present.Contains((watched.TxId, watched.Index)) || watched.State == DepositState.Dropped)
                continue;
            if (watched.Height is { } h && h < from)
                continue;
            await ApplyAsync(watched with { Height = null, Confirmations = null, Updated = now }, present: false);
        }
        store.SetScannedTip(Asset, scan.TipHeight);
        return true;
    }

    private async Task ApplyAsync(DepositRecord d, bool present)
    {
        var confirmed = d.Confirmations ?? 0;
        if (present && confirmed >= confirmations)
        {
            if (d.State != DepositState.Credited)
            {
                await CreditAsync(d);
                d = d with { State = DepositState.Credited, Credits = d.Credits + 1 };
            }
        }
        else if (d.State == DepositState.Credited)
        {
            await ReverseAsync(d);
            d = d with { State = DepositState.Reversed };
        }
        else if (d.State != DepositState.Reversed)
        {
            d = d with { State = !present ? DepositState.Dropped : confirmed == 0 ? DepositState.Seen : DepositState.Confirming };
        }
        store.SaveDeposit(d);
    }

    private Task CreditAsync(DepositRecord d) =>
        loop.RunAsync(s =>
        {
            var owner = s.Owner(d.Owner);
            var events = s.Submit(ExchangeCommand.Deposit(owner, assetIndex, d.Amount, $"deposit:{d.Asset}:{d.TxId}:{d.Index}:{d.Credits + 1}"));
            if (events[0].Kind == EventKind.Rejected && events[0].Reason != RejectReason.DuplicateKey)
                throw new InvalidOperationException($"The deposit {d.TxId}:{d.Index} was refused by the ledger: {events[0].Reason}.");
            Log.Credited(logger, d.Asset, d.Amount, d.Owner, d.TxId);
            return 0;
        });

    private Task ReverseAsync(DepositRecord d) =>
        loop.RunAsync(s =>
        {
            var owner = s.Owner(d.Owner);
            // Orders holding the coins are cancelled first, so that the reversal takes the coins rather than leave a debt.
            if (s.Engine.Ledger.Available(owner, assetIndex) < d.Amount && s.Engine.Ledger.Held(owner, assetIndex) > 0)
                s.Submit(ExchangeCommand.CancelAll(owner) with { Amount = s.Now });
            var events = s.Submit(ExchangeCommand.Reverse(owner, assetIndex, d.Amount, $"reversal:{d.Asset}:{d.TxId}:{d.Index}:{d.Credits}"));
            if (events[0].Kind == EventKind.Reversed)
                Log.Reversed(logger, d.Asset, d.Amount, d.Owner, d.TxId, events[0].Price);
            return 0;
        });

    private static partial class Log
    {
        [LoggerMessage(EventId = 700, Level = LogLevel.Information, Message = "Deposit of {Amount} {Asset} units to {Owner} credited (tx {TxId})")]
        public static partial void Credited(ILogger logger, string asset, long amount, string owner, string txId);

        [LoggerMessage(EventId = 701, Level = LogLevel.Warning, Message = "Deposit of {Amount} {Asset} units to {Owner} reversed: the chain no longer confirms tx {TxId}; {Owed} units owed")]
        public static partial void Reversed(ILogger logger, string asset, long amount, string owner, string txId, long owed);

        [LoggerMessage(EventId = 702, Level = LogLevel.Warning, Message = "The {Asset} chain cannot be reached: {Reason}")]
        public static partial void ChainUnavailable(ILogger logger, string asset, string reason);
    }
}
