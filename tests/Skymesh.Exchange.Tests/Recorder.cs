using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Tests;

/// <summary>Keeps every event the engine emits, in order.</summary>
internal sealed class Recorder : IExchangeEvents
{
    public List<ExchangeEvent> All { get; } = [];

    public void On(in ExchangeEvent e) => All.Add(e);
}
