using System.Collections.Concurrent;
using Skymesh.Identity;
using Skymesh.Exchange.Journal;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Service;

/// <summary>Sees every command the engine runs — replayed at start and live — before it runs, then its events.</summary>
internal interface IEngineObserver
{
    void Before(in ExchangeCommand command, bool replaying);

    void On(in ExchangeEvent e, bool replaying);

    /// <summary>
    /// A batch of live commands has run (on the engine thread, before it is durable). What the observer returns runs once
    /// the batch is durable, before its answers go out — e.g. sending the market data it caused.
    /// </summary>
    Action? BatchDone();
}

/// <summary>
/// The exchange's one engine thread. Work (a request's commands, a query, a deposit) is queued from any thread and run in
/// batches: every command of a batch is journaled and the batch handed to the commit thread, which writes and fsyncs
/// whatever has been handed to it with one write (group commit) and only then gives the answers — so whatever a caller is
/// told survives a crash, and queries see a consistent state without locks. The engine goes on with the next batch while
/// the disk takes the last. A failed commit stops the loop: nothing after it is acknowledged.
/// </summary>
internal sealed class EngineLoop : IDisposable, IReplayObserver
{
    private readonly JournaledExchange _exchange;
    private readonly TimeProvider _time;
    private readonly IEngineObserver[] _observers;
    private readonly ConcurrentQueue<WorkItem> _queue = new();
    // Woken only when it sleeps: a busy loop is never signalled, and a sleeping one does not spin on the shared cores.
    private readonly ManualResetEventSlim _wake = new(false, spinCount: 0);
    private int _sleeping;
    private readonly List<WorkItem> _batch = [];
    private readonly Queue<(List<WorkItem> Work, List<Action> AfterCommit)> _handed = new();
    private readonly object _handedLock = new();
    private readonly Thread _committer;
    private bool _handedClosed;
    private readonly List<ExchangeEvent> _events = [];
    private readonly Thread _thread;
    private readonly int _maxBatch;
    private volatile Exception? _fault;
    private volatile bool _stopping;
    private bool _replaying = true;

    public EngineLoop(Func<IReplayObserver, IExchangeEvents, JournaledExchange> open, TimeProvider time, IReadOnlyList<IEngineObserver> observers, int maxBatch = 4096)
    {
        _time = time;
        _observers = [.. observers];
        _maxBatch = maxBatch;
        _exchange = open(this, this);
        _replaying = false;
        _thread = new Thread(Run) { IsBackground = true, Name = "exchange engine" };
        _committer = new Thread(CommitLoop) { IsBackground = true, Name = "exchange journal" };
        _thread.Start();
        _committer.Start();
    }

    public MatchingEngine Engine => _exchange.Engine;

    /// <summary>Commands the journal holds (committed).</summary>
    public long Committed => _exchange.Committed;

    /// <summary>Why the loop stopped (a journal write failed), or null while it runs.</summary>
    public Exception? Fault => _fault;

    /// <summary>Runs <paramref name="work"/> on the engine thread; completes once the commands it submitted are durable.</summary>
    public Task<T> RunAsync<T>(Func<EngineSession, T> work)
    {
        var item = new Work<T>(work);
        if (_fault is { } fault)
            return Task.FromException<T>(new ExchangeStoppedException(fault));
        if (_stopping)
            return Task.FromException<T>(new ObjectDisposedException(nameof(EngineLoop), "The exchange is stopping."));
        _queue.Enqueue(item);
        Wake();
        return item.Task;
    }

    /// <summary>
    /// Queues a work item of the caller's own (the hot path's, pooled): it runs on the engine thread and is completed once
    /// its batch is durable, or failed — at once when the loop has stopped.
    /// </summary>
    public void Post(WorkItem item)
    {
        if (_fault is { } fault)
        {
            item.Fail(new ExchangeStoppedException(fault));
            return;
        }
        if (_stopping)
        {
            item.Fail(new ObjectDisposedException(nameof(EngineLoop), "The exchange is stopping."));
            return;
        }
        _queue.Enqueue(item);
        Wake();
    }

    private void Run()
    {
        var session = new EngineSession(this);
        while (_fault is null)
        {
            if (_queue.IsEmpty)
            {
                if (_stopping)
                    break;
                Interlocked.Exchange(ref _sleeping, 1);
                if (_queue.IsEmpty && !_stopping && _fault is null)
                    _wake.Wait();
                _wake.Reset();
                Interlocked.Exchange(ref _sleeping, 0);
                continue;
            }
            // Everything queued now (up to a bound) is one batch.
            while (_batch.Count < _maxBatch && _queue.TryDequeue(out var item))
            {
                _batch.Add(item);
                item.Execute(session);
            }
            var after = new List<Action>();
            foreach (var observer in _observers)
            {
                if (observer.BatchDone() is { } action)
                    after.Add(action);
            }
            lock (_handedLock)
            {
                _handed.Enqueue(([.. _batch], after));
                Monitor.Pulse(_handedLock);
            }
            _batch.Clear();
            _events.Clear();
        }
        if (_fault is { } fault)
        {
            while (_queue.TryDequeue(out var left))
                left.Fail(new ExchangeStoppedException(fault));
        }
        lock (_handedLock)
        {
            _handedClosed = true;
            Monitor.Pulse(_handedLock);
        }
    }

    /// <summary>The commit thread: every batch handed over so far made durable at once, then answered.</summary>
    private void CommitLoop()
    {
        var batches = new List<(List<WorkItem> Work, List<Action> AfterCommit)>();
        while (true)
        {
            lock (_handedLock)
            {
                while (_handed.Count == 0 && !_handedClosed)
                    Monitor.Wait(_handedLock);
                if (_handed.Count == 0)
                    return;
                while (_handed.Count > 0)
                    batches.Add(_handed.Dequeue());
            }
            try
            {
                _exchange.Commit();
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or Npgsql.NpgsqlException or InvalidOperationException)
            {
                _fault = e;
                foreach (var (work, _) in batches)
                {
                    foreach (var item in work)
                        item.Fail(new ExchangeStoppedException(e));
                }
                batches.Clear();
                Wake();
                continue;
            }
            foreach (var (_, after) in batches)
            {
                foreach (var action in after)
                    action();
            }
            // The answers are made and sent on the pool, a slice of requests per work item: in parallel, without a hop
            // through the pool's queue for each one, and without holding up the next commit.
            var slice = new List<WorkItem>(SliceSize);
            foreach (var (work, _) in batches)
            {
                foreach (var item in work)
                {
                    slice.Add(item);
                    if (slice.Count == SliceSize)
                    {
                        Background.Queue(new Completion(slice), preferLocal: false);
                        slice = new List<WorkItem>(SliceSize);
                    }
                }
            }
            if (slice.Count > 0)
                Background.Queue(new Completion(slice), preferLocal: false);
            batches.Clear();
        }
    }

    private const int SliceSize = 64;

    private sealed class Completion(List<WorkItem> items) : IThreadPoolWorkItem
    {
        public void Execute()
        {
            foreach (var item in items)
                item.Complete();
        }
    }

    private void Wake()
    {
        if (Interlocked.CompareExchange(ref _sleeping, 0, 1) == 1)
            _wake.Set();
    }

    void IReplayObserver.Replaying(in ExchangeCommand command)
    {
        foreach (var observer in _observers)
            observer.Before(command, replaying: true);
    }

    void IExchangeEvents.On(in ExchangeEvent e)
    {
        foreach (var observer in _observers)
            observer.On(e, _replaying);
        if (!_replaying)
            _events.Add(e);
    }

    private IReadOnlyList<ExchangeEvent> Submit(in ExchangeCommand command) => SubmitInPlace(command).ToArray();

    private ReadOnlySpan<ExchangeEvent> SubmitInPlace(scoped in ExchangeCommand command)
    {
        foreach (var observer in _observers)
            observer.Before(command, replaying: false);
        var first = _events.Count;
        _exchange.Submit(command);
        return System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_events)[first..];
    }

    public void Dispose()
    {
        _stopping = true;
        Interlocked.Exchange(ref _sleeping, 0);
        _wake.Set();
        if (Thread.CurrentThread != _thread)
            _thread.Join();
        if (Thread.CurrentThread != _committer)
            _committer.Join();
        while (_queue.TryDequeue(out var left))
            left.Fail(new ObjectDisposedException(nameof(EngineLoop), "The exchange stopped."));
        _exchange.Dispose();
        _wake.Dispose();
    }

    /// <summary>What work on the engine thread may do: submit commands and read the engine.</summary>
    internal sealed class EngineSession(EngineLoop loop)
    {
        public MatchingEngine Engine => loop._exchange.Engine;

        /// <summary>Milliseconds since 1970 by the exchange's clock.</summary>
        public long Now => loop._time.GetUtcNow().ToUnixTimeMilliseconds();

        /// <summary>Runs and journals one command; its events (an answer may only be given once the batch commits).</summary>
        public IReadOnlyList<ExchangeEvent> Submit(in ExchangeCommand command) => loop.Submit(command);

        /// <summary>As <see cref="Submit"/>, without copying the events: the span is good until the next command.</summary>
        public ReadOnlySpan<ExchangeEvent> SubmitInPlace(scoped in ExchangeCommand command) => loop.SubmitInPlace(command);

        /// <summary>The number of the owner with this key, opening its account if it has none.</summary>
        public int Owner(string key)
        {
            if (Engine.Ledger.TryGetOwner(key, out var owner))
                return owner;
            var events = Submit(ExchangeCommand.OpenAccount(key));
            return events.Count == 1 && events[0].Kind == EventKind.AccountOpened ? events[0].Owner
                : throw new ArgumentException($"'{key}' cannot name an account (1 to 256 characters).", nameof(key));
        }

        /// <summary>The owner's number, or -1 when it has no account.</summary>
        public int FindOwner(string key) => Engine.Ledger.TryGetOwner(key, out var owner) ? owner : -1;
    }

    /// <summary>A piece of work for the engine thread: run there, then completed once its batch is durable (or failed).</summary>
    internal abstract class WorkItem
    {
        public abstract void Execute(EngineSession session);

        public abstract void Complete();

        public abstract void Fail(Exception e);
    }

    private sealed class Work<T>(Func<EngineSession, T> work) : WorkItem
    {
        private readonly TaskCompletionSource<T> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private T? _result;
        private Exception? _error;

        public Task<T> Task => _done.Task;

        public override void Execute(EngineSession session)
        {
            try
            {
                _result = work(session);
            }
            catch (Exception e)
            {
                _error = e;
            }
        }

        public override void Complete()
        {
            if (_error is not null)
                _done.TrySetException(_error);
            else
                _done.TrySetResult(_result!);
        }

        public override void Fail(Exception e) => _done.TrySetException(e);
    }
}

/// <summary>The exchange stopped taking commands because its journal could not be written; nothing after that was acknowledged.</summary>
public sealed class ExchangeStoppedException : Exception
{
    public ExchangeStoppedException(Exception cause)
        : base($"The exchange stopped: its journal could not be written ({cause.Message}). Nothing unacknowledged was kept; restart it once the disk is fixed.", cause)
    {
    }

    public ExchangeStoppedException()
    {
    }

    public ExchangeStoppedException(string message)
        : base(message)
    {
    }

    public ExchangeStoppedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}
