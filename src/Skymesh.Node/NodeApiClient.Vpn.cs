namespace Skymesh.Node;

/// <summary>The VPN and mesh IPv6 through the local API (docs/vpn.md).</summary>
public sealed partial class NodeApiClient
{
    public Task<VpnView> VpnAsync(CancellationToken cancellationToken = default) => GetAsync<VpnView>("api/vpn", cancellationToken);

    public Task<VpnConnectReply> VpnConnectAsync(VpnConnectRequest request, CancellationToken cancellationToken = default) =>
        PostAsync<VpnConnectReply>("api/vpn/connect", request, cancellationToken);

    public Task VpnDisconnectAsync(CancellationToken cancellationToken = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Delete, "api/vpn/connect"), cancellationToken);

    public Task<VpnServerView> VpnServeAsync(Vpn.VpnConfig request, CancellationToken cancellationToken = default) =>
        PostAsync<VpnServerView>("api/vpn/serve", request, cancellationToken);

    public Task VpnStopServingAsync(CancellationToken cancellationToken = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Delete, "api/vpn/serve"), cancellationToken);
}
