namespace Skymesh.Identity;

/// <summary>
/// A cancellation token that fires when either of the given tokens does or when <c>delay</c> has passed on the given
/// <see cref="TimeProvider"/> — the virtual-time form of a linked source with <c>CancelAfter</c>, which would always
/// wait on the real clock. (It lives in the smallest project every other one references.)
/// </summary>
public sealed class Deadline : IDisposable
{
    private readonly CancellationTokenSource _timer;
    private readonly CancellationTokenSource _linked;

    public Deadline(TimeSpan delay, TimeProvider time, CancellationToken cancellationToken, CancellationToken other = default)
    {
        ArgumentNullException.ThrowIfNull(time);
        _timer = new CancellationTokenSource(delay, time);
        _linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, other, _timer.Token);
    }

    public CancellationToken Token => _linked.Token;

    /// <summary>The time ran out (rather than one of the given tokens being cancelled).</summary>
    public bool Expired => _timer.IsCancellationRequested;

    public void Dispose()
    {
        _linked.Dispose();
        _timer.Dispose();
    }
}
