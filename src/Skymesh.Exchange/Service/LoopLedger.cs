using Skymesh.Exchange.Matching;
using Skymesh.Ledger;

namespace Skymesh.Exchange.Service;

/// <summary>
/// The running exchange as an <see cref="ITransferLedger"/>: each batch of transfers one piece of work on the engine
/// thread, answered once it is durable — what mesh settlement pays receipts with inside the service (the same rules as
/// <see cref="ExchangeStore"/>'s transfers).
/// </summary>
internal sealed class LoopLedger(EngineLoop loop, ExchangeDefinition definition) : ITransferLedger
{
    public ValueTask<int?> GetScaleAsync(string asset, CancellationToken cancellationToken = default) =>
        ValueTask.FromResult(definition.Assets.FirstOrDefault(a => a.Code == asset)?.Scale);

    public async ValueTask<long> GetBalanceAsync(string owner, string asset, CancellationToken cancellationToken = default) =>
        await loop.RunAsync(s =>
        {
            var index = Index(asset);
            return index >= 0 && s.Engine.Ledger.TryGetOwner(owner, out var number) ? s.Engine.Ledger.Available(number, index) : 0;
        });

    public async ValueTask<IReadOnlyList<TransferResult>> TransferAsync(IReadOnlyList<LedgerTransfer> transfers, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transfers);
        return await loop.RunAsync(s => (IReadOnlyList<TransferResult>)[.. transfers.Select(t => Transfer(s, t))]);
    }

    private TransferResult Transfer(EngineLoop.EngineSession s, LedgerTransfer t)
    {
        if (string.IsNullOrEmpty(t.From) || string.IsNullOrEmpty(t.To) || t.From.Length > 256 || t.To.Length > 256)
            return new TransferResult(TransferOutcome.Rejected, "an owner's key must be 1 to 256 characters");
        var asset = Index(t.Asset);
        if (asset < 0)
            return new TransferResult(TransferOutcome.Rejected, $"no asset {t.Asset}");
        var ledger = s.Engine.Ledger;
        if (!ledger.TryGetOwner(t.From, out var from))
        {
            return ledger.Seen(t.Key) ? new TransferResult(TransferOutcome.AlreadyDone)
                : new TransferResult(TransferOutcome.InsufficientFunds, $"{t.From} has no account");
        }
        var events = s.Submit(ExchangeCommand.Transfer(from, s.Owner(t.To), asset, t.Amount, t.Key));
        return (events[0].Kind == EventKind.Rejected ? events[0].Reason : RejectReason.None) switch
        {
            RejectReason.None => new TransferResult(TransferOutcome.Done),
            RejectReason.DuplicateKey => new TransferResult(TransferOutcome.AlreadyDone),
            RejectReason.InsufficientFunds => new TransferResult(TransferOutcome.InsufficientFunds, $"{t.From} has {ledger.Available(from, asset)} {t.Asset} units available"),
            var reason => new TransferResult(TransferOutcome.Rejected, reason.ToString()),
        };
    }

    private int Index(string code)
    {
        for (var i = 0; i < definition.Assets.Count; i++)
        {
            if (definition.Assets[i].Code == code)
                return i;
        }
        return -1;
    }
}
