using Microsoft.Extensions.Logging;
using Skymesh.Exchange.Chains;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Service;

/// <summary>Withdrawal rules of one coin (docs/exchange-api.md, "Withdrawals").</summary>
public sealed record WithdrawalLimits
{
    /// <summary>Smallest withdrawal, in the coin's units.</summary>
    public long Minimum { get; init; } = 1;

    /// <summary>Most one account may withdraw in 24 hours.</summary>
    public long PerAccountDaily { get; init; } = long.MaxValue;

    /// <summary>Most all accounts together may withdraw in 24 hours.</summary>
    public long GlobalDaily { get; init; } = long.MaxValue;

    /// <summary>Withdrawals above this wait for an operator's approval; at or below it they are approved at once.</summary>
    public long ApprovalThreshold { get; init; } = long.MaxValue;

    /// <summary>Confirmations after which a withdrawal is confirmed.</summary>
    public int Confirmations { get; init; } = 1;
}

/// <summary>A withdrawal request was refused; <see cref="Code"/> is the API's error code.</summary>
public sealed class WithdrawalRefusedException(string code, string message, int status = 422) : Exception(message)
{
    public string Code { get; } = code;

    /// <summary>The call status it is answered with.</summary>
    public int Status { get; } = status;
}

/// <summary>
/// Withdrawals of one coin as a persisted state machine: requested → held → approved → broadcast → confirmed, or
/// failed (the chain refused it: refunded) or rejected (by the rules or an operator: refunded if held). Each transition is
/// written to <see cref="FundsStore"/> before the next step runs. The signed transaction is stored before it is ever
/// broadcast, and a withdrawal found approved with a transaction (a crash after signing, or mid-broadcast) is first looked
/// up on the chain: only a transaction the chain does not know is sent, and always the same one — so a withdrawal is
/// never broadcast twice and never pays twice.
/// </summary>
internal sealed partial class WithdrawalProcessor(IChainAdapter chain, FundsStore store, EngineLoop loop, int assetIndex, WithdrawalLimits limits,
    TimeProvider time, ILogger logger)
{
    private readonly SemaphoreSlim _stepping = new(1, 1);

    public IChainAdapter Chain => chain;

    public WithdrawalLimits Limits => limits;

    public string Asset => chain.Asset;

    /// <summary>Called after each step is made durable (and right after a broadcast, before it is recorded); tests crash the processor here.</summary>
    internal Action<string>? AfterStep { get; set; }

    /// <summary>
    /// Takes a withdrawal request: checks it, records it, debits the account (held by the exchange from now on) and
    /// approves it when it is small enough. A repeated key returns the first request's record.
    /// </summary>
    public async Task<WithdrawalRecord> RequestAsync(string owner, string key, string address, long amount)
    {
        if (string.IsNullOrEmpty(key) || key.Length > 64)
            throw new WithdrawalRefusedException("bad_key", "A withdrawal needs an idempotency key of 1 to 64 characters.");
        if (store.FindWithdrawal(owner, key) is { } existing)
        {
            return existing.Asset == Asset && existing.Address == address && existing.Amount == amount ? existing
                : throw new WithdrawalRefusedException("key_reused", $"The key '{key}' was used for another withdrawal ({existing.Id}).");
        }
        if (!chain.IsValidAddress(address))
            throw new WithdrawalRefusedException("bad_address", $"'{address}' is not a {Asset} address this exchange can pay.");
        if (amount < limits.Minimum)
            throw new WithdrawalRefusedException("below_minimum", $"The smallest {Asset} withdrawal is {limits.Minimum} units.");
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        var dayAgo = now - (long)TimeSpan.FromDays(1).TotalMilliseconds;
        if (store.WithdrawnSince(owner, Asset, dayAgo) + (Int128)amount > limits.PerAccountDaily)
            throw new WithdrawalRefusedException("limit_exceeded", $"This would take the account past its {Asset} withdrawal limit of {limits.PerAccountDaily} units in 24 hours.");
        if (store.WithdrawnSince(null, Asset, dayAgo) + (Int128)amount > limits.GlobalDaily)
            throw new WithdrawalRefusedException("limit_exceeded", $"The exchange's {Asset} withdrawals for the last 24 hours are at their limit; try later.");
        var (record, created) = store.AddWithdrawal(owner, key, Asset, address, amount, now);
        if (!created)
            return record;
        AfterStep?.Invoke("requested");
        record = await HoldAsync(record);
        if (record.State == WithdrawalState.Rejected)
        {
            throw new WithdrawalRefusedException(record.Reason ?? "rejected", $"The withdrawal was refused: {record.Reason}.",
                record.Reason == "account_frozen" ? 403 : 422);
        }
        await StepAsync(record.Id, CancellationToken.None);
        return store.Withdrawal(record.Id)!;
    }

    /// <summary>Debits the account (idempotent by the withdrawal's id) and moves the record to held, approved or rejected.</summary>
    private async Task<WithdrawalRecord> HoldAsync(WithdrawalRecord record)
    {
        var reason = await loop.RunAsync(s =>
        {
            var owner = s.FindOwner(record.Owner);
            if (owner < 0)
                return RejectReason.InsufficientFunds;
            var events = s.Submit(ExchangeCommand.Withdraw(owner, assetIndex, record.Amount, $"withdrawal:{record.Asset}:{record.Id}"));
            return events[0].Kind == EventKind.Rejected && events[0].Reason != RejectReason.DuplicateKey ? events[0].Reason : RejectReason.None;
        });
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        if (reason != RejectReason.None)
            return store.Update(record.Id, WithdrawalState.Rejected, now, reason: ErrorCodes.Of(reason));
        record = store.Update(record.Id, WithdrawalState.Held, now);
        AfterStep?.Invoke("held");
        if (record.Amount <= limits.ApprovalThreshold)
        {
            record = store.Update(record.Id, WithdrawalState.Approved, now, approvedBy: "auto");
            AfterStep?.Invoke("approved");
        }
        return record;
    }

    /// <summary>An operator's approval of a held withdrawal.</summary>
    public async Task<WithdrawalRecord> ApproveAsync(long id, string by)
    {
        var record = store.Withdrawal(id);
        if (record is null || record.Asset != Asset)
            throw new WithdrawalRefusedException("unknown_withdrawal", $"No {Asset} withdrawal {id}.");
        if (record.State != WithdrawalState.Held)
            throw new WithdrawalRefusedException("bad_state", $"Withdrawal {id} is {record.State.ToString().ToLowerInvariant()}, not held.");
        store.Update(id, WithdrawalState.Approved, time.GetUtcNow().ToUnixTimeMilliseconds(), approvedBy: by);
        AfterStep?.Invoke("approved");
        await StepAsync(id, CancellationToken.None);
        return store.Withdrawal(id)!;
    }

    /// <summary>An operator's refusal of a held withdrawal: the account is refunded.</summary>
    public async Task<WithdrawalRecord> RejectAsync(long id, string by, string reason)
    {
        var record = store.Withdrawal(id);
        if (record is null || record.Asset != Asset)
            throw new WithdrawalRefusedException("unknown_withdrawal", $"No {Asset} withdrawal {id}.");
        if (record.State != WithdrawalState.Held)
            throw new WithdrawalRefusedException("bad_state", $"Withdrawal {id} is {record.State.ToString().ToLowerInvariant()}, not held.");
        // The state first (with the refund owed), then the refund: a crash between leaves a rejected withdrawal whose
        // refund the next round makes — never one that could still be approved after its money went back.
        store.Update(id, WithdrawalState.Rejected, Now, reason: $"rejected by {by}: {reason}", refundDue: true);
        AfterStep?.Invoke("rejected");
        await RefundAsync(record);
        return store.Update(id, WithdrawalState.Rejected, Now, refundDue: false);
    }

    /// <summary>
    /// Moves every unfinished withdrawal as far as it can go now: at start (after a crash) and on every tick. Chain
    /// outages leave them where they are, to be tried again.
    /// </summary>
    public async Task ProcessAllAsync(CancellationToken cancellationToken)
    {
        var open = store.Withdrawals(null, Asset, [WithdrawalState.Requested, WithdrawalState.Held, WithdrawalState.Approved, WithdrawalState.Broadcast], int.MaxValue);
        foreach (var owed in store.RefundsDue(Asset))
        {
            await RefundAsync(owed);
            store.Update(owed.Id, owed.State, Now, refundDue: false);
        }
        foreach (var record in open.OrderBy(r => r.Id))
        {
            if (record.State == WithdrawalState.Requested)
                await HoldAsync(record);
            else if (record.State == WithdrawalState.Held && record.Amount <= limits.ApprovalThreshold)
                store.Update(record.Id, WithdrawalState.Approved, Now, approvedBy: "auto");
            await StepAsync(record.Id, cancellationToken);
        }
    }

    private async Task StepAsync(long id, CancellationToken cancellationToken)
    {
        // One step at a time per coin, so that a tick and a request never work on one withdrawal together.
        await _stepping.WaitAsync(cancellationToken);
        try
        {
            await StepLockedAsync(id, cancellationToken);
        }
        catch (ChainUnavailableException e)
        {
            Log.ChainUnavailable(logger, Asset, id, e.Message);
        }
        finally
        {
            _stepping.Release();
        }
    }

    private async Task StepLockedAsync(long id, CancellationToken cancellationToken)
    {
        var record = store.Withdrawal(id)!;
        if (record.State == WithdrawalState.Approved)
        {
            if (record.TxId is null)
            {
                ChainTransaction built;
                try
                {
                    built = await chain.BuildWithdrawalAsync(record.Address, record.Amount, cancellationToken);
                }
                catch (ChainRejectedException e)
                {
                    await FailAsync(record, e.Message);
                    return;
                }
                record = store.Update(id, WithdrawalState.Approved, Now, txId: built.TxId, raw: built.Raw);
                AfterStep?.Invoke("signed");
            }
            var transaction = new ChainTransaction(record.TxId!, record.Raw!);
            // Already on the chain (a crash after the broadcast, before it was recorded): never sent again.
            if (await chain.GetConfirmationsAsync(transaction.TxId, cancellationToken) is null)
            {
                try
                {
                    await chain.BroadcastAsync(transaction, cancellationToken);
                }
                catch (ChainRejectedException e)
                {
                    await FailAsync(record, e.Message);
                    return;
                }
                AfterStep?.Invoke("sent");
            }
            record = store.Update(id, WithdrawalState.Broadcast, Now, confirmations: 0);
            AfterStep?.Invoke("broadcast");
        }
        if (record.State == WithdrawalState.Broadcast)
        {
            var confirmations = await chain.GetConfirmationsAsync(record.TxId!, cancellationToken);
            if (confirmations is null)
            {
                // A reorganisation dropped it: the same transaction (same id) goes out again, which can only pay once.
                try
                {
                    await chain.BroadcastAsync(new ChainTransaction(record.TxId!, record.Raw!), cancellationToken);
                }
                catch (ChainRejectedException e)
                {
                    // Its coins were spent otherwise: it can never be mined, so it paid nothing.
                    await FailAsync(record, $"dropped by a reorganisation and refused again: {e.Message}");
                }
                return;
            }
            if (confirmations >= limits.Confirmations)
            {
                store.Update(id, WithdrawalState.Confirmed, Now, confirmations: confirmations);
                AfterStep?.Invoke("confirmed");
            }
            else if (confirmations != record.Confirmations)
            {
                store.Update(id, WithdrawalState.Broadcast, Now, confirmations: confirmations);
            }
        }
    }

    /// <summary>The chain refused the withdrawal: failed (with the refund owed, so a crash cannot lose it), then refunded.</summary>
    private async Task FailAsync(WithdrawalRecord record, string reason)
    {
        store.Update(record.Id, WithdrawalState.Failed, Now, reason: reason, refundDue: true);
        AfterStep?.Invoke("failed");
        await RefundAsync(record);
        store.Update(record.Id, WithdrawalState.Failed, Now, refundDue: false);
        Log.Failed(logger, Asset, record.Id, reason);
    }

    private Task RefundAsync(WithdrawalRecord record) =>
        loop.RunAsync(s =>
        {
            s.Submit(ExchangeCommand.Deposit(s.Owner(record.Owner), assetIndex, record.Amount, $"refund:{record.Asset}:{record.Id}"));
            return 0;
        });

    private long Now => time.GetUtcNow().ToUnixTimeMilliseconds();

    private static partial class Log
    {
        [LoggerMessage(EventId = 710, Level = LogLevel.Warning, Message = "{Asset} withdrawal {Id} waits: the chain cannot be reached ({Reason})")]
        public static partial void ChainUnavailable(ILogger logger, string asset, long id, string reason);

        [LoggerMessage(EventId = 711, Level = LogLevel.Warning, Message = "{Asset} withdrawal {Id} failed and was refunded: {Reason}")]
        public static partial void Failed(ILogger logger, string asset, long id, string reason);
    }
}
