namespace Skymesh.Exchange;

/// <summary>
/// An asset the exchange keeps accounts in. Every amount of it is a whole number of its smallest unit; <see cref="Scale"/>
/// says how many decimal places a whole coin has (8 for BTC: one unit is a satoshi). Nothing in the exchange is a float.
/// </summary>
public sealed record AssetSpec(string Code, int Scale)
{
    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Code) || Code.Length > 16)
            throw new ArgumentException($"An asset code must be 1 to 16 characters; got '{Code}'.");
        if (Scale is < 0 or > 18)
            throw new ArgumentException($"Asset {Code}: the scale must be 0 to 18 decimal places; got {Scale}.");
    }
}

/// <summary>
/// A market trading <see cref="Base"/> against <see cref="Quote"/>. Quantities are counted in lots of <see cref="LotSize"/>
/// base units; a price is the quote units one lot costs, a multiple of <see cref="TickSize"/>. So the value of a trade,
/// price × lots, is an exact number of quote units, and no rounding is ever needed to pay it.
/// </summary>
/// <param name="MinNotional">Smallest value (quote units) of a limit order.</param>
/// <param name="MakerFeePpm">Fee of the resting side, in millionths of the trade's value, paid in the quote asset.</param>
/// <param name="TakerFeePpm">Fee of the incoming side, likewise.</param>
public sealed record MarketSpec(string Symbol, string Base, string Quote, long LotSize, long TickSize, long MinNotional, int MakerFeePpm, int TakerFeePpm)
{
    /// <summary>Largest price × lots an order may have, so that every sum of them stays far from overflow.</summary>
    public const long MaxNotional = 1L << 60;

    public void Validate()
    {
        if (string.IsNullOrWhiteSpace(Symbol))
            throw new ArgumentException("A market needs a symbol.");
        if (Base == Quote)
            throw new ArgumentException($"Market {Symbol}: base and quote must differ.");
        if (LotSize < 1 || TickSize < 1 || MinNotional < 0)
            throw new ArgumentException($"Market {Symbol}: lot and tick sizes must be at least 1 and the minimum notional not negative.");
        if (MakerFeePpm is < 0 or > 100_000 || TakerFeePpm is < 0 or > 100_000)
            throw new ArgumentException($"Market {Symbol}: fees must be 0 to 100,000 ppm (10 %).");
    }

    /// <summary>The fee on a trade of value <paramref name="notional"/> at <paramref name="ppm"/>, rounded down.</summary>
    internal static long Fee(long notional, int ppm) => ppm == 0 ? 0 : (long)((Int128)notional * ppm / 1_000_000);
}
