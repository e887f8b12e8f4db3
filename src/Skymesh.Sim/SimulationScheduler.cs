namespace Skymesh.Sim;

/// <summary>
/// Runs every task of a simulated mesh on one thread, first queued first run: with <see cref="VirtualTime"/> this
/// makes a run a pure function of its seed. Work started with <c>Background.Run</c> and every <c>await</c> inside it
/// stay here; nothing of the mesh runs on the thread pool.
/// </summary>
public sealed class SimulationScheduler : TaskScheduler
{
    private readonly Queue<Task> _queue = new();
    private readonly Lock _lock = new();
    private readonly SemaphoreSlim _queued = new(0);
    private long _executed;
    private long _foreign;
    private int _thread = -1;

    /// <summary>
    /// Tasks queued from another thread than the one running the simulation: work that escaped to the thread pool and
    /// came back. A deterministic run has none; each is a place in the node code that needs fixing.
    /// </summary>
    public long ForeignQueues => Interlocked.Read(ref _foreign);

    /// <summary>Called with the stack of each foreign queueing, when set (to find where work escaped).</summary>
    public Action<string>? OnForeignQueue { get; set; }

    /// <summary>Tasks run so far.</summary>
    public long Executed => Interlocked.Read(ref _executed);

    public int Queued
    {
        get
        {
            lock (_lock)
                return _queue.Count;
        }
    }

    public override int MaximumConcurrencyLevel => 1;

    protected override void QueueTask(Task task)
    {
        var thread = Volatile.Read(ref _thread);
        if (thread != -1 && thread != Environment.CurrentManagedThreadId)
        {
            Interlocked.Increment(ref _foreign);
            OnForeignQueue?.Invoke(Environment.StackTrace);
        }
        lock (_lock)
            _queue.Enqueue(task);
        _queued.Release();
    }

    /// <summary>
    /// Waits, on the real clock, up to <paramref name="timeout"/> for a task to be queued from outside this thread (a
    /// continuation coming back from work that ran elsewhere); true when one was.
    /// </summary>
    public bool WaitForWork(TimeSpan timeout)
    {
        lock (_lock)
        {
            if (_queue.Count > 0)
                return true;
        }
        return _queued.Wait(timeout) || Queued > 0;
    }

    // Never inline: the order tasks run in must not depend on who waits for whom.
    protected override bool TryExecuteTaskInline(Task task, bool taskWasPreviouslyQueued) => false;

    protected override IEnumerable<Task> GetScheduledTasks()
    {
        lock (_lock)
            return [.. _queue];
    }

    /// <summary>Runs queued tasks, and those they queue, until none is left; returns how many ran.</summary>
    public int RunUntilIdle()
    {
        Volatile.Write(ref _thread, Environment.CurrentManagedThreadId);
        var ran = 0;
        while (true)
        {
            Task? next;
            lock (_lock)
            {
                if (!_queue.TryDequeue(out next))
                    return ran;
            }
            _queued.Wait(0);
            TryExecuteTask(next);
            ran++;
            Interlocked.Increment(ref _executed);
        }
    }

    /// <summary>Starts <paramref name="action"/> as a task of this scheduler (it runs at the next <see cref="RunUntilIdle"/>).</summary>
    public Task Start(Action action) => Task.Factory.StartNew(action, CancellationToken.None, TaskCreationOptions.DenyChildAttach, this);

    /// <summary>Starts <paramref name="work"/> on this scheduler: its awaits come back here.</summary>
    public Task<T> Start<T>(Func<Task<T>> work) => Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.DenyChildAttach, this).Unwrap();

    public Task Start(Func<Task> work) => Task.Factory.StartNew(work, CancellationToken.None, TaskCreationOptions.DenyChildAttach, this).Unwrap();
}
