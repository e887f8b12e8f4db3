using System.Text.Json;

namespace Skymesh.Node.Vpn;

/// <summary>A route the VPN added outside its own device (kept when the device goes), to be removed on disconnect.</summary>
public sealed record PinnedRoute(string Prefix, string? Gateway, string Device);

/// <summary>A NAT rule the VPN server added.</summary>
public sealed record MasqueradeRule(string Pool, string Device);

/// <summary>
/// What a VPN end changed on its host that does not go away with its TUN device — routes through the old gateway,
/// NAT rules, the DNS configuration — saved before each change, so that after a crash the node at its next start
/// (or <c>skymesh vpn down</c>) puts the host back as it was. The device itself, and every route into it, vanish
/// with the process that held it.
/// </summary>
public sealed class VpnHostState
{
    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, WriteIndented = true };

    public string Device { get; set; } = "";

    public List<PinnedRoute> Pinned { get; set; } = [];

    public List<MasqueradeRule> Masquerade { get; set; } = [];

    /// <summary>The resolver configuration file the VPN replaced, and what it held before.</summary>
    public string? ResolvConf { get; set; }

    public string? ResolvConfBefore { get; set; }

    public void Save(string file)
    {
        var temporary = file + ".tmp";
        File.WriteAllText(temporary, JsonSerializer.Serialize(this, Json));
        File.Move(temporary, file, overwrite: true);
    }

    /// <summary>Undoes what <paramref name="file"/> records, then removes it; what is already gone is skipped. Returns what was undone, in words.</summary>
    public static IReadOnlyList<string> CleanUp(string file, IHostNetwork host)
    {
        if (!File.Exists(file))
            return [];
        var done = new List<string>();
        VpnHostState? state;
        try
        {
            state = JsonSerializer.Deserialize<VpnHostState>(File.ReadAllText(file), Json);
        }
        catch (Exception e) when (e is JsonException or IOException)
        {
            File.Delete(file);
            return [$"ignored an unreadable VPN state file {file}: {e.Message}"];
        }
        if (state is not null)
        {
            foreach (var route in state.Pinned)
            {
                if (host.DeleteRoute(route.Prefix, route.Gateway, route.Device))
                    done.Add($"removed the route {route.Prefix}{(route.Gateway is null ? "" : $" via {route.Gateway}")} dev {route.Device}");
            }
            foreach (var rule in state.Masquerade)
            {
                if (host.DeleteMasquerade(rule.Pool, rule.Device))
                    done.Add($"removed the NAT rule for {rule.Pool}");
            }
            if (state.ResolvConf is { } resolv && state.ResolvConfBefore is { } before)
            {
                try
                {
                    File.WriteAllText(resolv, before);
                    done.Add($"restored {resolv}");
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    done.Add($"could not restore {resolv}: {e.Message}");
                }
            }
        }
        File.Delete(file);
        return done;
    }
}
