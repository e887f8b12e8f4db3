using System.Numerics;

namespace Skymesh.Exchange.Service;

/// <summary>
/// A market as the API shows it (docs/exchange-api.md, "Markets"): prices are decimal amounts of the quote asset for one
/// whole coin of the base asset, quantities decimal amounts of the base asset — never floats. The engine keeps prices in
/// quote units per lot; a lot must be a whole fraction of a coin (10^scale a multiple of the lot size), so every engine
/// price is an exact decimal and every decimal price on a tick maps back to exactly one engine price.
/// </summary>
public sealed class MarketRules
{
    public MarketRules(int index, MarketSpec spec, AssetSpec baseAsset, AssetSpec quoteAsset)
    {
        ArgumentNullException.ThrowIfNull(spec);
        Index = index;
        Spec = spec;
        Base = baseAsset;
        Quote = quoteAsset;
        var coin = BigInteger.Pow(10, baseAsset.Scale);
        if (spec.LotSize > coin || coin % spec.LotSize != 0)
        {
            throw new ArgumentException(
                $"Market {spec.Symbol}: a lot of {spec.LotSize} {baseAsset.Code} units is not a whole fraction of one {baseAsset.Code}; the API cannot show its prices exactly.");
        }
        PriceFactor = (long)(coin / spec.LotSize);
        Topic = MarketTopic(spec.Symbol);
    }

    public int Index { get; }

    public MarketSpec Spec { get; }

    public AssetSpec Base { get; }

    public AssetSpec Quote { get; }

    public string Symbol => Spec.Symbol;

    /// <summary>Lots in one coin: a price per coin in quote units is the engine's price per lot times this.</summary>
    public long PriceFactor { get; }

    /// <summary>The market-data topic's suffix: the symbol with '/' and other characters SSMP ids do not take as '-'.</summary>
    public string Topic { get; }

    public static string MarketTopic(string symbol) =>
        string.Concat(symbol.Select(c => c is (>= 'A' and <= 'Z') or (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' or '_' ? c : '-'));

    public string TickSize => FormatPrice(Spec.TickSize);

    public string LotSize => FormatQuantity(Spec.LotSize);

    public string MinNotional => AssetAmount.Format(Spec.MinNotional, Quote.Scale);

    /// <summary>Reads a decimal price per coin; false when it is not a positive multiple of the tick or too large.</summary>
    public bool TryParsePrice(string? text, out long enginePrice) => Price(AssetAmount.TryParse(text, Quote.Scale, out var perCoin), perCoin, out enginePrice);

    /// <inheritdoc cref="TryParsePrice(string?, out long)"/>
    public bool TryParsePrice(ReadOnlySpan<byte> utf8, out long enginePrice) => Price(AssetAmount.TryParse(utf8, Quote.Scale, out var perCoin), perCoin, out enginePrice);

    private bool Price(bool parsed, long perCoin, out long enginePrice)
    {
        enginePrice = 0;
        if (!parsed || perCoin <= 0 || perCoin % PriceFactor != 0)
            return false;
        enginePrice = perCoin / PriceFactor;
        return true;
    }

    public string FormatPrice(long enginePrice) => AssetAmount.Format(checked(enginePrice * PriceFactor), Quote.Scale);

    public bool TryParseQuantity(string? text, out long units) => AssetAmount.TryParse(text, Base.Scale, out units) && units > 0;

    /// <inheritdoc cref="TryParseQuantity(string?, out long)"/>
    public bool TryParseQuantity(ReadOnlySpan<byte> utf8, out long units) => AssetAmount.TryParse(utf8, Base.Scale, out units) && units > 0;

    public string FormatQuantity(long units) => AssetAmount.Format(units, Base.Scale);

    public string FormatQuote(long units) => AssetAmount.Format(units, Quote.Scale);
}
