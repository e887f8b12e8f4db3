using Skymesh.Exchange.Accounts;
using Skymesh.Exchange.Journal;
using Skymesh.Exchange.Matching;
using Skymesh.Ledger;

namespace Skymesh.Exchange;

/// <summary>
/// One <see cref="LedgerTransfer"/> as the engine's command, under the rules every <see cref="ITransferLedger"/> of the
/// exchange applies — the exchange directory (<see cref="ExchangeStore"/>) and the running service alike: names and keys
/// checked before anything runs, the payer's account never opened for a transfer it could not pay, a used key answered
/// "already done".
/// </summary>
internal static class LedgerTransfers
{
    /// <param name="owner">The number of an owner, its account opened if new.</param>
    /// <param name="submit">Runs the command; why it was refused, or <see cref="RejectReason.None"/>.</param>
    public static TransferResult Run(ExchangeLedger ledger, in LedgerTransfer t, Func<string, int> owner, Func<ExchangeCommand, RejectReason> submit)
    {
        if (string.IsNullOrEmpty(t.From) || string.IsNullOrEmpty(t.To) || t.From.Length > 256 || t.To.Length > 256)
            return new TransferResult(TransferOutcome.Rejected, "an owner's key must be 1 to 256 characters");
        if (!ledger.TryAssetIndex(t.Asset, out var asset))
            return new TransferResult(TransferOutcome.Rejected, $"no asset {t.Asset}");
        if (string.IsNullOrEmpty(t.Key) || t.Key.Length > CommandCodec.MaxKeyLength / 4)
            return new TransferResult(TransferOutcome.Rejected, "a transfer's key must be 1 to 256 characters");
        // The payer's account is not opened for a transfer it could not pay anyway.
        if (!ledger.TryGetOwner(t.From, out var from))
        {
            return ledger.Seen(t.Key) ? new TransferResult(TransferOutcome.AlreadyDone)
                : new TransferResult(TransferOutcome.InsufficientFunds, $"{t.From} has no account");
        }
        return submit(ExchangeCommand.Transfer(from, owner(t.To), asset, t.Amount, t.Key)) switch
        {
            RejectReason.None => new TransferResult(TransferOutcome.Done),
            RejectReason.DuplicateKey => new TransferResult(TransferOutcome.AlreadyDone),
            RejectReason.InsufficientFunds => new TransferResult(TransferOutcome.InsufficientFunds, $"{t.From} has {ledger.Available(from, asset)} {t.Asset} available"),
            var reason => new TransferResult(TransferOutcome.Rejected, reason.ToString()),
        };
    }
}
