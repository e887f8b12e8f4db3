using System.Collections.Concurrent;
using System.Text.Json;
using Skymesh.Control.Settlement;
using Skymesh.Exchange.Service;
using Skymesh.Identity;

namespace Skymesh.Node;

/// <summary>
/// Settlement on a running exchange service (node.json <c>"settlement": {"service": true}</c> with an <c>exchange</c>
/// section; docs/control-plane.md, "Settling on the exchange service"): the node hands the receipts its neighbours signed
/// to the exchange's <c>settle</c> method, and the exchange — which checks every payer's signature itself and keeps
/// every pair's position — pays the relay's account from the payers'. This side keeps only what the answers told it:
/// positions, the latest receipt paid per pair, and the node's SKY balance there. An exchange that is away fails the
/// round; the receipts stay and the next round hands them in again (a receipt paid twice moves nothing).
/// </summary>
internal sealed class ExchangeSettlement(Func<string, object?, CancellationToken, Task<JsonElement>> call, NodeAddress self, string description) : ILedger
{
    private readonly ConcurrentDictionary<(NodeAddress Payer, NodeAddress Payee), (SettledPosition Position, Receipt? Latest)> _pairs = new();
    private long _balance;

    public string Description { get; } = description;

    public async ValueTask<SettlementResult> SettleAsync(Receipt receipt, CancellationToken cancellationToken = default) =>
        (await SettleAsync([receipt], cancellationToken))[0];

    public async ValueTask<IReadOnlyList<SettlementResult>> SettleAsync(IReadOnlyList<Receipt> receipts, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(receipts);
        var results = new SettlementResult[receipts.Count];
        var ours = Enumerable.Range(0, receipts.Count).Where(i => receipts[i].Payee == self).ToList();
        // The exchange takes only receipts to the account that hands them in: others are not this node's to settle.
        foreach (var i in Enumerable.Range(0, receipts.Count).Except(ours))
            results[i] = new SettlementResult(SettlementOutcome.Refused, 0, SettledOf(receipts[i].Payer, receipts[i].Payee));
        if (ours.Count > 0)
        {
            var answer = await call("settle", new { receipts = ours.Select(i => Convert.ToHexStringLower(receipts[i].Bytes)).ToArray() }, cancellationToken);
            var list = answer.GetProperty("results");
            for (var k = 0; k < ours.Count; k++)
            {
                var r = list[k];
                var receipt = receipts[ours[k]];
                var outcome = r.GetProperty("outcome").GetString() switch
                {
                    "settled" => SettlementOutcome.Settled,
                    "alreadysettled" => SettlementOutcome.AlreadySettled,
                    "invalid" => SettlementOutcome.Invalid,
                    "nonmonotonic" => SettlementOutcome.NonMonotonic,
                    _ => SettlementOutcome.Refused,
                };
                var position = new SettledPosition(r.GetProperty("settledSequence").GetUInt64(), r.GetProperty("settledAmount").GetInt64());
                results[ours[k]] = new SettlementResult(outcome, r.GetProperty("moved").GetInt64(), position);
                var key = (receipt.Payer, receipt.Payee);
                _pairs.AddOrUpdate(key, (position, position.Sequence == receipt.Sequence ? receipt : null),
                    (_, old) => (position, position.Sequence == receipt.Sequence ? receipt : old.Latest));
            }
        }
        await GetBalanceAsync(self, cancellationToken);
        return results;
    }

    public async ValueTask<long> GetBalanceAsync(NodeAddress node, CancellationToken cancellationToken = default)
    {
        if (node != self)
            return 0;
        var answer = await call("balances", null, cancellationToken);
        foreach (var balance in answer.GetProperty("balances").EnumerateArray())
        {
            // SKY has six decimal places: its smallest unit is the receipts' micro-unit.
            if (balance.GetProperty("asset").GetString() == ExchangeService.SettlementAsset
                && Exchange.AssetAmount.TryParse(balance.GetProperty("available").GetString(), 6, out var units))
                Interlocked.Exchange(ref _balance, units);
        }
        return Interlocked.Read(ref _balance);
    }

    public async ValueTask<SettledPosition> GetSettledAsync(NodeAddress payer, NodeAddress payee, CancellationToken cancellationToken = default)
    {
        var answer = await call("settled", new { payer = payer.ToString(), payee = payee.ToString() }, cancellationToken);
        var position = new SettledPosition(answer.GetProperty("sequence").GetUInt64(), answer.GetProperty("amount").GetInt64());
        Receipt? latest = null;
        if (answer.GetProperty("receipt").GetString() is { } hex && Receipt.TryParse(Convert.FromHexString(hex), out var parsed) == ReceiptError.None)
            latest = parsed;
        _pairs[(payer, payee)] = (position, latest);
        return position;
    }

    public long BalanceOf(NodeAddress node) => node == self ? Interlocked.Read(ref _balance) : 0;

    public SettledPosition SettledOf(NodeAddress payer, NodeAddress payee) =>
        _pairs.TryGetValue((payer, payee), out var pair) ? pair.Position : default;

    public Receipt? LatestSettled(NodeAddress payer, NodeAddress payee) =>
        _pairs.TryGetValue((payer, payee), out var pair) ? pair.Latest : null;

    public IReadOnlyList<NodeAddress> PayersOf(NodeAddress payee) => [.. _pairs.Keys.Where(k => k.Payee == payee).Select(k => k.Payer)];

    public void Dispose()
    {
    }
}
