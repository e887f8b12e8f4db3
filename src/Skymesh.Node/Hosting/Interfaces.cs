using System.Collections.Concurrent;
using System.Net;
using Skymesh.Mesh.Interfaces;
using Skymesh.Mesh.Wire;

namespace Skymesh.Node.Hosting;

/// <summary>Opens a node's configured interfaces: real sockets for UDP and TCP, an in-process network for memory.</summary>
public interface IInterfaceFactory
{
    IMeshInterface Open(InterfaceOptions nic, TimeProvider time);
}

/// <summary>
/// Named in-process networks (<c>"type": "memory", "network": "lab"</c> in node.json): every node of one registry that
/// names the same network reaches the others on it. A simulation or a test makes its own registry on its own clock;
/// <see cref="Shared"/> is the process's, on real time.
/// </summary>
public sealed class MemoryNetworks(TimeProvider? time = null, int seed = 84)
{
    private readonly ConcurrentDictionary<string, MemoryNetwork> _networks = new(StringComparer.Ordinal);

    public static MemoryNetworks Shared { get; } = new();

    public TimeProvider Time { get; } = time ?? TimeProvider.System;

    /// <summary>The network of that name, made on first use (each seeded from the registry's seed and its name, so runs repeat).</summary>
    public MemoryNetwork this[string name] => _networks.GetOrAdd(name, static (n, s) => new MemoryNetwork(s.Time, s.seed ^ StableHash(n)), (Time, seed));

    private static int StableHash(string text)
    {
        var hash = 17;
        foreach (var c in text)
            hash = unchecked(hash * 31 + c);
        return hash;
    }
}

/// <summary>The interfaces every node has: UDP and TCP sockets, and memory interfaces on a <see cref="MemoryNetworks"/> registry.</summary>
public sealed class InterfaceFactory(MemoryNetworks? networks = null) : IInterfaceFactory
{
    public static InterfaceFactory Default { get; } = new();

    public MemoryNetworks Networks { get; } = networks ?? MemoryNetworks.Shared;

    public IMeshInterface Open(InterfaceOptions nic, TimeProvider time)
    {
        ArgumentNullException.ThrowIfNull(nic);
        switch (nic.Kind)
        {
            case InterfaceKind.Udp:
                return new UdpInterface((IPEndPoint)nic.Listen, nic.Mtu, nic.Name);
            case InterfaceKind.Tcp:
                return new TcpInterface((IPEndPoint)nic.Listen, new TcpInterfaceOptions { Name = nic.Name, Mtu = nic.Mtu ?? MeshWire.MaxFrameLength }, time);
            case InterfaceKind.Memory:
                var network = Networks[nic.Network ?? "default"];
                var port = nic.Listen is MemoryEndPoint { Port: > 0 } chosen ? chosen.Port : 0;
                var opened = port > 0
                    ? network.CreateInterface(port, nic.Name, nic.Mtu ?? MeshWire.MaxFrameLength)
                    : network.CreateInterface(nic.Name, nic.Mtu ?? MeshWire.MaxFrameLength);
                if (nic.Impairment is { } impairment)
                    network.SetSenderImpairment(opened.EndPoint, impairment);
                return opened;
            default:
                throw new ArgumentOutOfRangeException(nameof(nic), nic.Kind, "Not an interface kind.");
        }
    }
}
