namespace Skymesh.Identity;

/// <summary>
/// A counting signal for one waiter at a time: <see cref="Release"/> adds one, <see cref="WaitAsync"/> takes one or
/// waits for it. Unlike <c>SemaphoreSlim.WaitAsync(token)</c>, whose cancellable wait completes through the thread
/// pool, a wait here completes on the thread that releases or cancels it — so a simulation on one thread stays in
/// order. (It lives in the smallest project every other one references.)
/// </summary>
public sealed class AsyncSignal
{
    private readonly Lock _lock = new();
    private int _count;
    private TaskCompletionSource? _waiter;

    /// <summary>Releases not yet taken.</summary>
    public int CurrentCount
    {
        get
        {
            lock (_lock)
                return _count;
        }
    }

    public void Release()
    {
        TaskCompletionSource? waiter;
        lock (_lock)
        {
            waiter = _waiter;
            _waiter = null;
            if (waiter is null)
                _count++;
        }
        // Handed straight to the waiter (whose continuation runs asynchronously, on its own scheduler).
        waiter?.TrySetResult();
    }

    /// <summary>Takes one release, waiting for it if there is none; a cancelled wait takes nothing.</summary>
    public Task WaitAsync(CancellationToken cancellationToken)
    {
        TaskCompletionSource waiter;
        lock (_lock)
        {
            if (_count > 0)
            {
                _count--;
                return Task.CompletedTask;
            }
            if (cancellationToken.IsCancellationRequested)
                return Task.FromCanceled(cancellationToken);
            if (_waiter is not null)
                throw new InvalidOperationException("An AsyncSignal has one waiter at a time.");
            waiter = _waiter = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
        if (!cancellationToken.CanBeCanceled)
            return waiter.Task;
        return WaitCancellableAsync(waiter, cancellationToken);
    }

    private async Task WaitCancellableAsync(TaskCompletionSource waiter, CancellationToken cancellationToken)
    {
        using (cancellationToken.UnsafeRegister(static (state, token) =>
        {
            var (signal, waiter) = ((AsyncSignal, TaskCompletionSource))state!;
            lock (signal._lock)
            {
                // Still waiting: withdraw, so a later release is counted instead of lost.
                if (signal._waiter == waiter)
                    signal._waiter = null;
            }
            waiter.TrySetCanceled(token);
        }, (this, waiter)))
        {
            await waiter.Task;
        }
    }
}
