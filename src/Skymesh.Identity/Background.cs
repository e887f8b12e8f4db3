namespace Skymesh.Identity;

/// <summary>
/// Starts background work on the task scheduler of whoever starts it: the thread pool in a real process, and the
/// simulation's single-threaded scheduler when a whole mesh runs on virtual time (docs/node.md, "Virtual time"),
/// where <c>Task.Run</c> would escape to the pool and make the run depend on thread timing. (It lives in the smallest
/// project every other one references.)
/// </summary>
public static class Background
{
    /// <summary>Runs <paramref name="work"/> in the background; as <c>Task.Run</c> outside a simulation.</summary>
    public static Task Run(Func<Task> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.DenyChildAttach, TaskScheduler.Current).Unwrap();
    }

    /// <summary>Runs <paramref name="work"/> in the background and gives its result.</summary>
    public static Task<T> Run<T>(Func<Task<T>> work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.DenyChildAttach, TaskScheduler.Current).Unwrap();
    }

    /// <summary>Runs synchronous <paramref name="work"/> in the background.</summary>
    public static Task Run(Action work)
    {
        ArgumentNullException.ThrowIfNull(work);
        return Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.DenyChildAttach, TaskScheduler.Current);
    }

    /// <summary>Queues a work item: straight to the thread pool (no allocation) in a real process, as a task in a simulation.</summary>
    public static void Queue(IThreadPoolWorkItem item, bool preferLocal)
    {
        ArgumentNullException.ThrowIfNull(item);
        var scheduler = TaskScheduler.Current;
        if (scheduler == TaskScheduler.Default)
        {
#pragma warning disable RS0030 // the one place that queues to the pool, having checked that no simulation runs
            ThreadPool.UnsafeQueueUserWorkItem(item, preferLocal);
#pragma warning restore RS0030
        }
        else
            Task.Factory.StartNew(static s => ((IThreadPoolWorkItem)s!).Execute(), item, CancellationToken.None, TaskCreationOptions.DenyChildAttach, scheduler);
    }

    /// <summary>
    /// Cancels <paramref name="source"/>: its callbacks run on the pool in a real process (as <c>CancelAsync</c>), and
    /// here, in order, in a simulation — where the pool would let them race the simulation's own thread.
    /// </summary>
    public static Task CancelAsync(CancellationTokenSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (TaskScheduler.Current == TaskScheduler.Default)
            return source.CancelAsync();
        source.Cancel();
        return Task.CompletedTask;
    }

    /// <summary>
    /// <paramref name="task"/>, or a cancellation when <paramref name="cancellationToken"/> fires first: as
    /// <c>Task.WaitAsync</c>, whose completion goes through the thread pool when the task runs its continuations
    /// asynchronously; in a simulation it comes back here instead.
    /// </summary>
    public static Task<T> WaitAsync<T>(Task<T> task, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(task);
        if (task.IsCompleted || !cancellationToken.CanBeCanceled)
            return task;
        if (TaskScheduler.Current == TaskScheduler.Default)
            return task.WaitAsync(cancellationToken);
        var race = new TaskCompletionSource<T>(TaskCreationOptions.RunContinuationsAsynchronously);
        _ = ForwardAsync(task, race);
        return RaceAsync(race, cancellationToken);

        static async Task ForwardAsync(Task<T> task, TaskCompletionSource<T> race)
        {
            try
            {
                race.TrySetResult(await task);
            }
            catch (OperationCanceledException e)
            {
                race.TrySetCanceled(e.CancellationToken);
            }
            catch (Exception e)
            {
                race.TrySetException(e);
            }
        }

        static async Task<T> RaceAsync(TaskCompletionSource<T> race, CancellationToken cancellationToken)
        {
            using (cancellationToken.UnsafeRegister(static (s, token) => ((TaskCompletionSource<T>)s!).TrySetCanceled(token), race))
                return await race.Task;
        }
    }

    /// <inheritdoc cref="WaitAsync{T}(Task{T}, CancellationToken)"/>
    public static Task WaitAsync(Task task, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(task);
        if (task.IsCompleted || !cancellationToken.CanBeCanceled)
            return task;
        if (TaskScheduler.Current == TaskScheduler.Default)
            return task.WaitAsync(cancellationToken);
        return WaitAsync(AsValue(task), cancellationToken);

        static async Task<bool> AsValue(Task task)
        {
            await task;
            return true;
        }
    }

    /// <summary>As <c>Task.WaitAsync(timeout, time, token)</c> (a <see cref="TimeoutException"/> when the time passes), kept to the caller's scheduler.</summary>
    public static async Task WaitAsync(Task task, TimeSpan timeout, TimeProvider time, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(task);
        ArgumentNullException.ThrowIfNull(time);
        if (TaskScheduler.Current == TaskScheduler.Default)
        {
            await task.WaitAsync(timeout, time, cancellationToken);
            return;
        }
        using var timer = new CancellationTokenSource(timeout, time);
        using var either = CancellationTokenSource.CreateLinkedTokenSource(timer.Token, cancellationToken);
        try
        {
            await WaitAsync(task, either.Token);
        }
        catch (OperationCanceledException) when (timer.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"The operation did not complete within {timeout.TotalSeconds:0.###} s.");
        }
    }
}
