namespace Skymesh.Exchange.Accounts;

/// <summary>Which of an asset's accounts a movement touches.</summary>
public enum AccountKind : byte
{
    /// <summary>An owner's spendable balance.</summary>
    Available,

    /// <summary>An owner's balance held for open orders or pending withdrawals.</summary>
    Held,

    /// <summary>The exchange's fees in the asset.</summary>
    Fees,

    /// <summary>The world outside: deposits come from it and withdrawals go to it, so its balance is minus what the exchange owes.</summary>
    External,

    /// <summary>
    /// What an owner owes the exchange after a deposit it had spent was reversed (a chain reorganisation): kept apart, never
    /// as a negative balance; an owner with a debt is frozen, and its next deposits repay it first.
    /// </summary>
    Debt,
}

/// <summary>Why money moved.</summary>
public enum MovementReason : byte
{
    Deposit,
    Withdrawal,
    Hold,
    Release,
    Trade,
    Fee,

    /// <summary>From one owner to another outside any trade (mesh settlement).</summary>
    Transfer,

    /// <summary>A credited deposit taken back because the chain no longer confirms it.</summary>
    Reversal,

    /// <summary>Part of a deposit that repaid a debt.</summary>
    Repayment,
}

/// <summary>
/// One double-entry movement: <see cref="Amount"/> of an asset from one account to another. <see cref="Reference"/> and
/// <see cref="Leg"/> make its idempotency key: the command (or trade) that caused it and its place among that command's
/// movements; deposits and withdrawals carry the key their requester gave.
/// </summary>
public readonly record struct LedgerMovement(
    MovementReason Reason, int Asset, long Amount,
    int FromOwner, AccountKind From, int ToOwner, AccountKind To,
    long Reference, int Leg, string? Key);

/// <summary>Receives every movement as it is made (the audit journal, tests); called on the engine's thread.</summary>
public interface ILedgerListener
{
    void OnMovement(in LedgerMovement movement);
}

/// <summary>
/// The exchange's accounts: per owner and asset an available and a held balance, per asset a fee account and the external
/// account that deposits come from and withdrawals go to. Every change is a double-entry movement, so per asset the sum
/// of every account is always zero; <see cref="CheckConservation"/> checks that and that what owners hold plus fees is
/// exactly what was deposited less what was withdrawn. Owners are numbered as they are first seen (the engine refers to
/// them by number); an owner is a key, e.g. a node address.
/// </summary>
public sealed class ExchangeLedger
{
    private readonly AssetSpec[] _assets;
    private readonly Dictionary<string, int> _assetIndex = new(StringComparer.Ordinal);
    private readonly List<string> _owners = [];
    private readonly Dictionary<string, int> _ownerIndex = new(StringComparer.Ordinal);
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);
    private readonly long[] _fees;
    private readonly long[] _external;
    private readonly long[] _deposited;
    private readonly long[] _withdrawn;
    private long[] _available = [];
    private long[] _held = [];
    private long[] _debt = [];
    private int _debtors;

    public ExchangeLedger(IReadOnlyList<AssetSpec> assets)
    {
        ArgumentNullException.ThrowIfNull(assets);
        if (assets.Count == 0)
            throw new ArgumentException("The ledger needs at least one asset.");
        _assets = [.. assets];
        for (var i = 0; i < _assets.Length; i++)
        {
            _assets[i].Validate();
            if (!_assetIndex.TryAdd(_assets[i].Code, i))
                throw new ArgumentException($"Asset {_assets[i].Code} is listed twice.");
        }
        _fees = new long[_assets.Length];
        _external = new long[_assets.Length];
        _deposited = new long[_assets.Length];
        _withdrawn = new long[_assets.Length];
    }

    public IReadOnlyList<AssetSpec> Assets => _assets;

    public int OwnerCount => _owners.Count;

    public ILedgerListener? Listener { get; set; }

    public bool TryAssetIndex(string code, out int index) => _assetIndex.TryGetValue(code, out index);

    public int AssetIndex(string code) =>
        _assetIndex.TryGetValue(code, out var i) ? i : throw new ArgumentException($"No asset {code}.");

    public string OwnerKey(int owner) => _owners[owner];

    /// <summary>The number of an owner, added if new.</summary>
    public int Owner(string key)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        if (_ownerIndex.TryGetValue(key, out var owner))
            return owner;
        owner = _owners.Count;
        _owners.Add(key);
        _ownerIndex.Add(key, owner);
        var needed = _owners.Count * _assets.Length;
        if (_available.Length < needed)
        {
            var size = Math.Max(needed, _available.Length * 2);
            Array.Resize(ref _available, size);
            Array.Resize(ref _held, size);
            Array.Resize(ref _debt, size);
        }
        return owner;
    }

    public bool TryGetOwner(string key, out int owner) => _ownerIndex.TryGetValue(key, out owner);

    public long Available(int owner, int asset) => _available[Slot(owner, asset)];

    public long Held(int owner, int asset) => _held[Slot(owner, asset)];

    public long Fees(int asset) => _fees[asset];

    /// <summary>What the owner owes in the asset after a reversed deposit (see <see cref="AccountKind.Debt"/>).</summary>
    public long Debt(int owner, int asset) => _debt[Slot(owner, asset)];

    /// <summary>True while the owner owes anything: it may not trade, withdraw or pay until a deposit repays it.</summary>
    public bool IsFrozen(int owner) => _debtors != 0 && Owes(owner);

    public long Deposited(int asset) => _deposited[asset];

    public long Withdrawn(int asset) => _withdrawn[asset];

    /// <summary>True when a movement with this idempotency key was already made (deposits and withdrawals).</summary>
    public bool Seen(string key) => _keys.Contains(key);

    /// <summary>Credits a deposit; false (and nothing moves) when its key was already used.</summary>
    public bool Deposit(int owner, int asset, long amount, string key, long reference)
    {
        CheckOwner(owner);
        CheckAsset(asset);
        if (amount <= 0)
            throw new ArgumentOutOfRangeException(nameof(amount), amount, "A deposit must be positive.");
        ArgumentException.ThrowIfNullOrEmpty(key);
        if (!_keys.Add(key))
            return false;
        var slot = Slot(owner, asset);
        _external[asset] -= amount;
        _deposited[asset] = checked(_deposited[asset] + amount);
        var repaid = Math.Min(amount, _debt[slot]);
        if (repaid > 0)
        {
            _debt[slot] -= repaid;
            if (!IsFrozen(owner))
                _debtors--;
            Listener?.OnMovement(new LedgerMovement(MovementReason.Repayment, asset, repaid, -1, AccountKind.External, owner, AccountKind.Debt, reference, 0, key));
        }
        if (amount > repaid)
        {
            _available[slot] = checked(_available[slot] + amount - repaid);
            Listener?.OnMovement(new LedgerMovement(MovementReason.Deposit, asset, amount - repaid, -1, AccountKind.External, owner, AccountKind.Available, reference, 1, key));
        }
        return true;
    }

    /// <summary>
    /// Takes back a deposit of <paramref name="amount"/> that the chain no longer confirms: from the available balance, and
    /// what that does not cover becomes the owner's debt (the owner is frozen until it is repaid). False, and nothing
    /// moves, when <paramref name="key"/> was already used. Returns the part that became debt in <paramref name="owed"/>.
    /// </summary>
    public bool Reverse(int owner, int asset, long amount, string key, long reference, out long owed)
    {
        CheckOwner(owner);
        CheckAsset(asset);
        if (amount <= 0)
            throw new ArgumentOutOfRangeException(nameof(amount), amount, "A reversal must be positive.");
        ArgumentException.ThrowIfNullOrEmpty(key);
        owed = 0;
        if (!_keys.Add(key))
            return false;
        var slot = Slot(owner, asset);
        var taken = Math.Min(amount, _available[slot]);
        owed = amount - taken;
        _external[asset] += amount;
        _deposited[asset] -= amount;
        if (taken > 0)
        {
            _available[slot] -= taken;
            Listener?.OnMovement(new LedgerMovement(MovementReason.Reversal, asset, taken, owner, AccountKind.Available, -1, AccountKind.External, reference, 0, key));
        }
        if (owed > 0)
        {
            if (!IsFrozen(owner))
                _debtors++;
            _debt[slot] = checked(_debt[slot] + owed);
            Listener?.OnMovement(new LedgerMovement(MovementReason.Reversal, asset, owed, owner, AccountKind.Debt, -1, AccountKind.External, reference, 1, key));
        }
        return true;
    }

    /// <summary>Debits a withdrawal from the available balance; false when its key was already used or the balance is short.</summary>
    public bool Withdraw(int owner, int asset, long amount, string key, long reference)
    {
        CheckOwner(owner);
        CheckAsset(asset);
        if (amount <= 0)
            throw new ArgumentOutOfRangeException(nameof(amount), amount, "A withdrawal must be positive.");
        ArgumentException.ThrowIfNullOrEmpty(key);
        var slot = Slot(owner, asset);
        if (_keys.Contains(key) || _available[slot] < amount)
            return false;
        _keys.Add(key);
        _available[slot] -= amount;
        _external[asset] += amount;
        _withdrawn[asset] += amount;
        Listener?.OnMovement(new LedgerMovement(MovementReason.Withdrawal, asset, amount, owner, AccountKind.Available, -1, AccountKind.External, reference, 0, key));
        return true;
    }

    /// <summary>
    /// Pays <paramref name="amount"/> from one owner's available balance to another's; false when its key was already used
    /// or the payer's balance is short (nothing moves then).
    /// </summary>
    public bool Transfer(int from, int to, int asset, long amount, string key, long reference)
    {
        CheckOwner(from);
        CheckOwner(to);
        CheckAsset(asset);
        if (amount <= 0)
            throw new ArgumentOutOfRangeException(nameof(amount), amount, "A transfer must be positive.");
        if (from == to)
            throw new ArgumentException("An owner cannot pay itself.", nameof(to));
        ArgumentException.ThrowIfNullOrEmpty(key);
        var payer = Slot(from, asset);
        if (_keys.Contains(key) || _available[payer] < amount)
            return false;
        _keys.Add(key);
        _available[payer] -= amount;
        _available[Slot(to, asset)] = checked(_available[Slot(to, asset)] + amount);
        Listener?.OnMovement(new LedgerMovement(MovementReason.Transfer, asset, amount, from, AccountKind.Available, to, AccountKind.Available, reference, 0, key));
        return true;
    }

    /// <summary>
    /// Checks, for every asset, that the accounts sum to zero and that owners' balances plus fees equal deposits less
    /// withdrawals, and that no balance is negative. Throws <see cref="InvalidOperationException"/> naming the first fault.
    /// </summary>
    public void CheckConservation()
    {
        for (var asset = 0; asset < _assets.Length; asset++)
        {
            Int128 owners = 0;
            for (var owner = 0; owner < _owners.Count; owner++)
            {
                var slot = Slot(owner, asset);
                if (_available[slot] < 0 || _held[slot] < 0)
                    throw new InvalidOperationException($"{_assets[asset].Code}: owner {owner} has a negative balance ({_available[slot]} available, {_held[slot]} held).");
                if (_debt[slot] < 0)
                    throw new InvalidOperationException($"{_assets[asset].Code}: owner {owner} has a negative debt ({_debt[slot]}).");
                owners += _available[slot] + (Int128)_held[slot] - _debt[slot];
            }
            if (_fees[asset] < 0)
                throw new InvalidOperationException($"{_assets[asset].Code}: negative fees {_fees[asset]}.");
            var total = owners + _fees[asset];
            if (total + _external[asset] != 0)
                throw new InvalidOperationException($"{_assets[asset].Code}: the accounts sum to {total + _external[asset]}, not 0.");
            if (total != (Int128)_deposited[asset] - _withdrawn[asset])
                throw new InvalidOperationException($"{_assets[asset].Code}: owners and fees hold {total}, but {_deposited[asset]} was deposited and {_withdrawn[asset]} withdrawn.");
        }
    }

    // The engine's movements: checked by the engine before it makes them, so they cannot fail here.

    internal void Hold(int owner, int asset, long amount, long reference, int leg)
    {
        var slot = Slot(owner, asset);
        _available[slot] -= amount;
        _held[slot] += amount;
        Listener?.OnMovement(new LedgerMovement(MovementReason.Hold, asset, amount, owner, AccountKind.Available, owner, AccountKind.Held, reference, leg, null));
    }

    internal void Release(int owner, int asset, long amount, long reference, int leg)
    {
        if (amount == 0)
            return;
        var slot = Slot(owner, asset);
        _held[slot] -= amount;
        _available[slot] += amount;
        Listener?.OnMovement(new LedgerMovement(MovementReason.Release, asset, amount, owner, AccountKind.Held, owner, AccountKind.Available, reference, leg, null));
    }

    /// <summary>Moves held funds of one owner to another's available balance (the two legs of a trade).</summary>
    internal void Pay(int from, int to, int asset, long amount, long reference, int leg)
    {
        if (amount == 0)
            return;
        _held[Slot(from, asset)] -= amount;
        _available[Slot(to, asset)] += amount;
        Listener?.OnMovement(new LedgerMovement(MovementReason.Trade, asset, amount, from, AccountKind.Held, to, AccountKind.Available, reference, leg, null));
    }

    /// <summary>Moves held funds of an owner to the fee account.</summary>
    internal void PayFee(int from, int asset, long amount, long reference, int leg)
    {
        if (amount == 0)
            return;
        _held[Slot(from, asset)] -= amount;
        _fees[asset] += amount;
        Listener?.OnMovement(new LedgerMovement(MovementReason.Fee, asset, amount, from, AccountKind.Held, -1, AccountKind.Fees, reference, leg, null));
    }

    /// <summary>Moves an owner's available funds to the fee account (a seller's fee, out of what it was just paid).</summary>
    internal void ChargeFee(int from, int asset, long amount, long reference, int leg)
    {
        if (amount == 0)
            return;
        _available[Slot(from, asset)] -= amount;
        _fees[asset] += amount;
        Listener?.OnMovement(new LedgerMovement(MovementReason.Fee, asset, amount, from, AccountKind.Available, -1, AccountKind.Fees, reference, leg, null));
    }

    /// <summary>Folds this ledger's state into a hash (the engine's state hash).</summary>
    internal void Hash(ref StateHasher hasher)
    {
        hasher.Add(_owners.Count);
        for (var asset = 0; asset < _assets.Length; asset++)
        {
            hasher.Add(_fees[asset]);
            hasher.Add(_deposited[asset]);
            hasher.Add(_withdrawn[asset]);
            for (var owner = 0; owner < _owners.Count; owner++)
            {
                hasher.Add(_available[Slot(owner, asset)]);
                hasher.Add(_held[Slot(owner, asset)]);
                // Only a ledger that ever held a debt folds debts in, so hashes of ledgers without one stay as they were.
                if (_debtors > 0 || _debt[Slot(owner, asset)] != 0)
                    hasher.Add(_debt[Slot(owner, asset)]);
            }
        }
    }

    private int Slot(int owner, int asset) => owner * _assets.Length + asset;

    /// <summary>Writes every balance, owner and used idempotency key (part of the engine's snapshot).</summary>
    internal void WriteTo(BinaryWriter writer)
    {
        writer.Write(_assets.Length);
        for (var asset = 0; asset < _assets.Length; asset++)
        {
            writer.Write(_assets[asset].Code);
            writer.Write(_fees[asset]);
            writer.Write(_external[asset]);
            writer.Write(_deposited[asset]);
            writer.Write(_withdrawn[asset]);
        }
        writer.Write(_owners.Count);
        for (var owner = 0; owner < _owners.Count; owner++)
        {
            writer.Write(_owners[owner]);
            for (var asset = 0; asset < _assets.Length; asset++)
            {
                writer.Write(_available[Slot(owner, asset)]);
                writer.Write(_held[Slot(owner, asset)]);
            }
        }
        // In order, so that the same state writes the same bytes.
        writer.Write(_keys.Count);
        foreach (var key in _keys.Order(StringComparer.Ordinal))
            writer.Write(key);
        var debts = 0;
        foreach (var d in _debt)
            debts += d != 0 ? 1 : 0;
        writer.Write(debts);
        for (var slot = 0; slot < _owners.Count * _assets.Length; slot++)
        {
            if (_debt[slot] != 0)
            {
                writer.Write(slot);
                writer.Write(_debt[slot]);
            }
        }
    }

    /// <summary>Reads what <see cref="WriteTo"/> wrote into this empty ledger of the same assets.</summary>
    internal void ReadFrom(BinaryReader reader, bool withDebts = true)
    {
        if (_owners.Count != 0)
            throw new InvalidOperationException("A snapshot is read into an empty ledger.");
        if (reader.ReadInt32() != _assets.Length)
            throw new InvalidDataException("The snapshot's assets differ from the ledger's.");
        for (var asset = 0; asset < _assets.Length; asset++)
        {
            if (reader.ReadString() != _assets[asset].Code)
                throw new InvalidDataException("The snapshot's assets differ from the ledger's.");
            _fees[asset] = reader.ReadInt64();
            _external[asset] = reader.ReadInt64();
            _deposited[asset] = reader.ReadInt64();
            _withdrawn[asset] = reader.ReadInt64();
        }
        var owners = reader.ReadInt32();
        for (var i = 0; i < owners; i++)
        {
            var owner = Owner(reader.ReadString());
            for (var asset = 0; asset < _assets.Length; asset++)
            {
                _available[Slot(owner, asset)] = reader.ReadInt64();
                _held[Slot(owner, asset)] = reader.ReadInt64();
            }
        }
        var keys = reader.ReadInt32();
        for (var i = 0; i < keys; i++)
            _keys.Add(reader.ReadString());
        var debts = withDebts ? reader.ReadInt32() : 0;
        for (var i = 0; i < debts; i++)
        {
            var slot = reader.ReadInt32();
            if ((uint)slot >= (uint)(_owners.Count * _assets.Length))
                throw new InvalidDataException("The snapshot names a debt of no account.");
            _debt[slot] = reader.ReadInt64();
        }
        for (var owner = 0; owner < _owners.Count; owner++)
            _debtors += Owes(owner) ? 1 : 0;
    }

    private bool Owes(int owner)
    {
        for (var asset = 0; asset < _assets.Length; asset++)
        {
            if (_debt[Slot(owner, asset)] > 0)
                return true;
        }
        return false;
    }

    private void CheckOwner(int owner)
    {
        if ((uint)owner >= (uint)_owners.Count)
            throw new ArgumentOutOfRangeException(nameof(owner), owner, "No such owner.");
    }

    private void CheckAsset(int asset)
    {
        if ((uint)asset >= (uint)_assets.Length)
            throw new ArgumentOutOfRangeException(nameof(asset), asset, "No such asset.");
    }
}
