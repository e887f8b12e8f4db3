namespace Skymesh.Ssmp.Broker;

/// <summary>
/// A topic and its subscribers. Membership changes and the presence events they cause happen under
/// <see cref="Sync"/>, so every watcher sees them in one order; MCAST reads <see cref="Members"/> without
/// the lock (the array is replaced, never changed in place).
/// </summary>
internal sealed class Topic(string name)
{
    public string Name { get; } = name;

    public object Sync { get; } = new();

    public Member[] Members { get; set; } = [];

    /// <summary>Set when the last member leaves; a dead topic is out of the broker's map and must not gain members.</summary>
    public bool Dead { get; set; }

    public int IndexOf(BrokerConnection connection)
    {
        var members = Members;
        for (var i = 0; i < members.Length; i++)
        {
            if (members[i].Connection == connection)
                return i;
        }
        return -1;
    }
}

internal readonly record struct Member(BrokerConnection Connection, bool Presence);
