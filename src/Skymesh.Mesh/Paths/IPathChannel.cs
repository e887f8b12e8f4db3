namespace Skymesh.Mesh.Paths;

/// <summary>
/// Where a path endpoint sends its messages: one direction of a path, as the node binds it to a label on a
/// link. A path endpoint knows nothing else about links or labels.
/// </summary>
public interface IPathChannel
{
    /// <summary>Largest message payload the path carries; read when the endpoint is created or retargeted.</summary>
    int MaxPayload { get; }

    /// <summary>
    /// Queues one message without blocking; false when it had to be dropped (the endpoint treats that as loss).
    /// The payload is valid only during the call. An implementation must not call back into the endpoint
    /// from inside this call: the endpoint holds a stream's lock while it sends.
    /// </summary>
    bool TrySend(byte type, ReadOnlySpan<byte> payload);
}
