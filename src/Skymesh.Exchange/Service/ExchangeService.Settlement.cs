using System.Text.Json;
using Skymesh.Control.Settlement;
using Skymesh.Identity;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Exchange.Service;

/// <summary>
/// Mesh settlement on the running exchange (docs/exchange-api.md, "settle"): a relay hands in the signed cumulative
/// receipts its neighbours gave it; the exchange checks each payer's signature itself and pays the part not paid before
/// from the payer's account to the relay's, once per receipt — the same <see cref="TransferSettlement"/> a node runs on an
/// exchange directory, here on the exchange's own ledger, its positions in DIR/settlement.db.
/// </summary>
public sealed partial class ExchangeService
{
    /// <summary>The asset receipts are paid in.</summary>
    public const string SettlementAsset = "SKY";

    private TransferSettlement? _settlement;

    /// <summary>Receipts a request may carry.</summary>
    private const int MaxReceiptsPerRequest = 1000;

    private async Task StartSettlementAsync(CancellationToken cancellationToken)
    {
        if (!_assetIndex.ContainsKey(SettlementAsset))
            return;
        _settlement = await TransferSettlement.OpenAsync(new LoopLedger(_loop, Definition), SettlementAsset, Path.Combine(_options.Directory, "settlement.db"),
            description: $"exchange service ({SettlementAsset})", cancellationToken: cancellationToken);
    }

    private void RegisterSettlement(SsmpPeer peer)
    {
        Private(peer, "settle", SettleAsync, request => Math.Max(1, request.Body.Length / (2 * Receipt.Length)));
        Private(peer, "settled", SettledAsync);
    }

    /// <summary>
    /// Settles receipts to the caller (the payee of each); one result per receipt, in order: the outcome, micro-units
    /// moved, and where the pair stands now.
    /// </summary>
    private async Task<object> SettleAsync(Call call)
    {
        var account = call.RequireAccount();
        var settlement = _settlement ?? throw new ExchangeApiException(404, "no_settlement", $"This exchange has no {SettlementAsset} to settle receipts in.");
        if (!call.Args.TryGetProperty("receipts", out var list) || list.ValueKind != JsonValueKind.Array || list.GetArrayLength() is 0 or > MaxReceiptsPerRequest)
            throw new ExchangeApiException(400, "bad_request", $"'receipts' lists 1 to {MaxReceiptsPerRequest} receipts, each in hex.");
        var receipts = new List<Receipt>();
        foreach (var item in list.EnumerateArray())
        {
            byte[] bytes;
            try
            {
                bytes = Convert.FromHexString(item.GetString() ?? "");
            }
            catch (Exception e) when (e is FormatException or InvalidOperationException)
            {
                throw new ExchangeApiException(400, "bad_receipt", "A receipt is its bytes in hex.");
            }
            if (Receipt.TryParse(bytes, out var receipt) != ReceiptError.None || receipt is null)
                throw new ExchangeApiException(400, "bad_receipt", $"Receipt {receipts.Count} is not a settlement receipt.");
            if (receipt.Payee.ToString() != account)
                throw new ExchangeApiException(403, "not_payee", $"Receipt {receipts.Count} pays {receipt.Payee}, not this account: only the payee hands in its receipts.");
            receipts.Add(receipt);
        }
        var results = await settlement.SettleAsync(receipts);
        return new
        {
            asset = SettlementAsset,
            results = results.Select((r, i) => new
            {
                payer = receipts[i].Payer.ToString(),
                sequence = receipts[i].Sequence,
                outcome = r.Outcome.ToString().ToLowerInvariant(),
                moved = r.Moved,
                settledSequence = r.Position.Sequence,
                settledAmount = r.Position.Amount,
            }).ToList(),
        };
    }

    /// <summary>How far a payer → payee pair is settled, and the latest receipt settled (for a relay that lost its own record).</summary>
    private Task<object> SettledAsync(Call call)
    {
        call.RequireAccount();
        var settlement = _settlement ?? throw new ExchangeApiException(404, "no_settlement", $"This exchange has no {SettlementAsset} to settle receipts in.");
        if (!NodeAddress.TryParse(Required(call.Args, "payer"), out var payer) || !NodeAddress.TryParse(Required(call.Args, "payee"), out var payee))
            throw new ExchangeApiException(400, "bad_request", "'payer' and 'payee' are account keys (64 hex digits).");
        var position = settlement.SettledOf(payer, payee);
        return Task.FromResult<object>(new
        {
            sequence = position.Sequence,
            amount = position.Amount,
            receipt = settlement.LatestSettled(payer, payee) is { } latest ? Convert.ToHexStringLower(latest.Bytes) : null,
        });
    }
}
