using System.Globalization;
using System.Net;

namespace Skymesh.Mesh.Apps;

/// <summary>
/// Which targets a node connects to for streams that arrive on its paths. Rules are <c>host:port</c>: host is
/// <c>*</c>, a name (matched without regard to case), an address, or a network in CIDR form (<c>10.0.0.0/8</c>,
/// <c>[fd00::]/8</c>); port is <c>*</c>, a number or a range <c>1000-2000</c>. An empty policy allows nothing,
/// so a node is never an open exit unless its operator says so.
/// </summary>
public sealed class ExitPolicy
{
    private readonly Rule[] _rules;

    private ExitPolicy(Rule[] rules, IReadOnlyList<string> text)
    {
        _rules = rules;
        Rules = text;
    }

    public static ExitPolicy None { get; } = new([], []);

    public IReadOnlyList<string> Rules { get; }

    /// <exception cref="FormatException">A rule is malformed; the message names it.</exception>
    public static ExitPolicy Parse(IEnumerable<string> rules)
    {
        ArgumentNullException.ThrowIfNull(rules);
        var parsed = new List<Rule>();
        var text = new List<string>();
        foreach (var rule in rules)
        {
            parsed.Add(ParseRule(rule));
            text.Add(rule);
        }
        return new ExitPolicy([.. parsed], text);
    }

    /// <summary>Whether a target named <paramref name="host"/> at <paramref name="address"/> (once resolved) may be reached on <paramref name="port"/>.</summary>
    public bool Allows(string host, IPAddress? address, int port)
    {
        foreach (var rule in _rules)
        {
            if (port < rule.PortLow || port > rule.PortHigh)
                continue;
            if (rule.AnyHost
                || (rule.Name is not null && string.Equals(rule.Name, host, StringComparison.OrdinalIgnoreCase))
                || (rule.Network is { } network && address is not null && network.Contains(address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address)))
                return true;
        }
        return false;
    }

    /// <summary>
    /// Whether packets without ports (ICMP, and other transports the VPN carries) may go to <paramref name="address"/>:
    /// when some rule allows the address (or every host) at all, whatever its ports.
    /// </summary>
    public bool AllowsAnyPort(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        var bare = address.IsIPv4MappedToIPv6 ? address.MapToIPv4() : address;
        foreach (var rule in _rules)
        {
            if (rule.AnyHost || (rule.Network is { } network && network.Contains(bare)))
                return true;
        }
        return false;
    }

    private static Rule ParseRule(string rule)
    {
        if (string.IsNullOrWhiteSpace(rule))
            throw new FormatException("An exit rule is empty; write host:port, e.g. \"127.0.0.1:*\" or \"*:443\".");
        var colon = rule.LastIndexOf(':');
        if (colon <= 0 || colon == rule.Length - 1)
            throw new FormatException($"Exit rule \"{rule}\" is not host:port.");
        var host = rule[..colon];
        var port = rule[(colon + 1)..];
        int low, high;
        if (port == "*")
        {
            (low, high) = (1, 65535);
        }
        else
        {
            var dash = port.IndexOf('-', StringComparison.Ordinal);
            if (!TryPort(dash < 0 ? port : port[..dash], out low) || !TryPort(dash < 0 ? port : port[(dash + 1)..], out high) || high < low)
                throw new FormatException($"Exit rule \"{rule}\": the port must be *, a number from 1 to 65535, or a range low-high.");
        }
        if (host == "*")
            return new Rule(true, null, null, low, high);
        var bare = host.StartsWith('[') && host.Contains(']', StringComparison.Ordinal) ? host.Replace("[", "", StringComparison.Ordinal).Replace("]", "", StringComparison.Ordinal) : host;
        if (bare.Contains('/', StringComparison.Ordinal))
        {
            if (!IPNetwork.TryParse(bare, out var network))
                throw new FormatException($"Exit rule \"{rule}\": \"{host}\" is not a network in CIDR form.");
            return new Rule(false, null, network, low, high);
        }
        if (IPAddress.TryParse(bare, out var address))
            return new Rule(false, null, new IPNetwork(address, address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128), low, high);
        if (Uri.CheckHostName(host) != UriHostNameType.Dns)
            throw new FormatException($"Exit rule \"{rule}\": \"{host}\" is not a host name, address or network.");
        return new Rule(false, host, null, low, high);
    }

    private static bool TryPort(string text, out int port) =>
        int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out port) && port is >= 1 and <= 65535;

    private sealed record Rule(bool AnyHost, string? Name, IPNetwork? Network, int PortLow, int PortHigh);
}
