using System.Text.Json;
using System.Text.Json.Serialization;

namespace Skymesh.Node.Operator;

/// <summary>How the node decides by itself what would otherwise wait for a person (docs/dashboard.md, "Decisions").</summary>
/// <param name="Neighbours">A node that is not a configured peer asks to link: <c>accept</c>, <c>ask</c> or <c>refuse</c>.</param>
/// <param name="Credit">A neighbour reaches its credit limit: <c>keep</c> the limit (it stays suspended until it pays) or <c>ask</c>.</param>
/// <param name="Exits">A peer asks for a destination the exit policy does not allow: <c>refuse</c> or <c>ask</c>.</param>
/// <param name="Price">A path found costs more than <paramref name="MaxPathPrice"/>: <c>pay</c>, pick a <c>cheaper</c> one, or <c>ask</c>.</param>
/// <param name="MaxPathPrice">The most a path may cost per MiB (the relays' prices summed) before <paramref name="Price"/> applies; null for no cap.</param>
public sealed record DecisionPolicies(
    string Neighbours = "accept", string Credit = "keep", string Exits = "refuse", string Price = "pay", ulong? MaxPathPrice = null)
{
    public static readonly IReadOnlyList<string> NeighbourChoices = ["accept", "ask", "refuse"];
    public static readonly IReadOnlyList<string> CreditChoices = ["keep", "ask"];
    public static readonly IReadOnlyList<string> ExitChoices = ["refuse", "ask"];
    public static readonly IReadOnlyList<string> PriceChoices = ["pay", "cheaper", "ask"];

    /// <summary>The first thing wrong with these policies (a field and what it may be), or null.</summary>
    public string? Problem() =>
        !NeighbourChoices.Contains(Neighbours) ? $"\"neighbours\" is one of {string.Join(", ", NeighbourChoices)}"
        : !CreditChoices.Contains(Credit) ? $"\"credit\" is one of {string.Join(", ", CreditChoices)}"
        : !ExitChoices.Contains(Exits) ? $"\"exits\" is one of {string.Join(", ", ExitChoices)}"
        : !PriceChoices.Contains(Price) ? $"\"price\" is one of {string.Join(", ", PriceChoices)}"
        : null;
}

/// <summary>What the owner set for one neighbour; null fields keep the node's defaults.</summary>
public sealed record NeighbourSettings(long? CreditLimit = null, bool Suspended = false);

/// <summary>
/// Everything the node's owner decided while it ran — policies, accepted and blocked nodes, per-neighbour credit, the
/// price, the exit rules, the services offered — kept in <c>operator.json</c> in the data directory so that it holds after a restart. What is
/// set here wins over node.json (which gives the starting values).
/// </summary>
public sealed record OperatorState
{
    public DecisionPolicies? Policies { get; init; }

    public IReadOnlyList<string> Accepted { get; init; } = [];

    public IReadOnlyList<string> Blocked { get; init; } = [];

    public IReadOnlyDictionary<string, NeighbourSettings> Neighbours { get; init; } = new Dictionary<string, NeighbourSettings>();

    public uint? Price { get; init; }

    public long? CreditLimit { get; init; }

    public IReadOnlyList<string>? Exits { get; init; }

    /// <summary>What the node offers in its service record, when the owner changed it from node.json's.</summary>
    public IReadOnlyList<ServiceConfig>? Services { get; init; }

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public const string FileName = "operator.json";

    /// <summary>The state kept in <paramref name="file"/>, or an empty one when there is none yet.</summary>
    public static OperatorState Load(string file)
    {
        if (!File.Exists(file))
            return new OperatorState();
        try
        {
            return JsonSerializer.Deserialize<OperatorState>(File.ReadAllBytes(file), Json) ?? new OperatorState();
        }
        catch (JsonException e)
        {
            throw new NodeConfigException("$", $"{file} is not valid ({e.Message}); fix it or remove it (it holds what was decided on the dashboard)", e);
        }
    }

    /// <summary>Writes the state whole (a new file renamed over the old one, readable by the owner only).</summary>
    public void Save(string file) => Skymesh.Dashboard.OwnerOnlyFile.Write(file, stream => JsonSerializer.Serialize(stream, this, Json));
}
