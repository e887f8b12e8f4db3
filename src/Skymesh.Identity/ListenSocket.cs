using System.Net.Sockets;

namespace Skymesh.Identity;

/// <summary>Socket options every Skymesh TCP listener shares. (It lives in the smallest project every other one references.)</summary>
public static class ListenSocket
{
    /// <summary>
    /// Lets a restarted listener take its port back while the connections of its last run wait out TIME_WAIT, and
    /// nothing more. .NET's <see cref="SocketOptionName.ReuseAddress"/> sets SO_REUSEPORT as well on Linux and macOS,
    /// which lets a second process listen on the same port and have the kernel split clients between the two — a
    /// second broker or node would take half of the first one's clients without a word. So plain SO_REUSEADDR is set
    /// by number there; on Windows the option would let another program steal the port, so it is left off.
    /// </summary>
    public static void AllowQuickRestart(Socket socket)
    {
        ArgumentNullException.ThrowIfNull(socket);
        if (OperatingSystem.IsLinux())
            socket.SetRawSocketOption(1 /* SOL_SOCKET */, 2 /* SO_REUSEADDR */, BitConverter.GetBytes(1));
        else if (OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD())
            socket.SetRawSocketOption(0xFFFF /* SOL_SOCKET */, 4 /* SO_REUSEADDR */, BitConverter.GetBytes(1));
    }
}
