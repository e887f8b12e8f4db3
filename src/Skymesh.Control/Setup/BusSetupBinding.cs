using Skymesh.Control.Bus;
using Skymesh.Identity;

namespace Skymesh.Control.Setup;

/// <summary>Calls other nodes' control agents over the control bus, which proves who calls.</summary>
public sealed class BusControlCaller(IControlBus bus, BusCallOptions? options = null) : IControlCaller
{
    private readonly BusCallOptions _options = options ?? new BusCallOptions { AttemptTimeout = TimeSpan.FromSeconds(1), Attempts = 3 };

    public Task<ReadOnlyMemory<byte>> CallAsync(NodeAddress to, string method, ReadOnlyMemory<byte> body, CancellationToken cancellationToken) =>
        bus.RequestAsync(to, method, body, _options, cancellationToken);
}

/// <summary>Serves a node's side of path setup on the control bus (reserve, commit, release).</summary>
public static class SetupService
{
    public static void Register(IControlBus bus, PathSetupHop hop)
    {
        ArgumentNullException.ThrowIfNull(bus);
        ArgumentNullException.ThrowIfNull(hop);
        bus.Handle(SetupMethods.Reserve, (request, _) => Run(() => hop.Reserve(request.From, request.Body.Span).ToBytes()));
        bus.Handle(SetupMethods.Commit, (request, _) => Run(() =>
        {
            hop.Commit(request.From, Parse(request.Body.Span, CommitMessage.Parse));
            return [];
        }));
        bus.Handle(SetupMethods.Release, (request, _) => Run(() =>
        {
            if (request.Body.Length != 16)
                throw new ControlBusException(ControlBusException.BadRequest, "a release names a 16-byte path id");
            hop.Release(request.From, new Guid(request.Body.Span, bigEndian: true));
            return [];
        }));
    }

    private static ValueTask<ReadOnlyMemory<byte>> Run(Func<byte[]> step)
    {
        try
        {
            return ValueTask.FromResult<ReadOnlyMemory<byte>>(step());
        }
        catch (SetupRefusedException e)
        {
            throw new ControlBusException(e.Status, e.Message);
        }
    }

    private static T Parse<T>(ReadOnlySpan<byte> body, SpanParser<T> parse)
    {
        try
        {
            return parse(body);
        }
        catch (FormatException e)
        {
            throw new ControlBusException(ControlBusException.BadRequest, e.Message);
        }
    }

    private delegate T SpanParser<T>(ReadOnlySpan<byte> body);
}
