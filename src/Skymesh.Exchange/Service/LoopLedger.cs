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
            s.Engine.Ledger.TryAssetIndex(asset, out var index) && s.Engine.Ledger.TryGetOwner(owner, out var number) ? s.Engine.Ledger.Available(number, index) : 0);

    public async ValueTask<IReadOnlyList<TransferResult>> TransferAsync(IReadOnlyList<LedgerTransfer> transfers, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(transfers);
        return await loop.RunAsync(s => (IReadOnlyList<TransferResult>)[.. transfers.Select(t => Transfer(s, t))]);
    }

    private static TransferResult Transfer(EngineLoop.EngineSession s, LedgerTransfer t) =>
        LedgerTransfers.Run(s.Engine.Ledger, t, s.Owner, command =>
        {
            var events = s.Submit(command);
            return events[0].Kind == EventKind.Rejected ? events[0].Reason : RejectReason.None;
        });
}
