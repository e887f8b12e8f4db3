using System.Collections.Concurrent;
using Skymesh.Exchange.Journal;
using Skymesh.Exchange.Matching;

namespace Skymesh.Exchange.Service;

/// <summary>Sees every command the engine runs — replayed at start and live — before it runs, then its events.</summary>
internal interface IEngineObserver
{
    void Before(in ExchangeCommand command, bool replaying);

    void On(in ExchangeEvent e, bool replaying);

    /// <summary>A batch of live commands is durable (its answers go out next).</summary>
    void Committed();
}

/// <summary>
/// The exchange's one engine thread. Work (a request's commands, a query, a deposit) is queued from any thread and run in
/// batches: every command of a batch is journaled, the batch committed with one write and one fsync (group commit), and
/// only then are the answers given — so whatever a caller is told survives a crash, and queries see a consistent state
/// without locks. A failed commit stops the loop: nothing after it is acknowledged.
/// </summary>
internal sealed class EngineLoop : IDisposable, IReplayObserver
{
    private readonly JournaledExchange _exchange;
    private readonly TimeProvider _time;
    private readonly IEngineObserver[] _observers;
    private readonly ConcurrentQueue<Work> _queue = new();
    private readonly SemaphoreSlim _signal = new(0);
    private readonly List<Work> _batch = [];
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
        _thread.Start();
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
        _signal.Release();
        return item.Task;
    }

    private void Run()
    {
        var session = new EngineSession(this);
        while (true)
        {
            _signal.Wait();
            if (_stopping && _queue.IsEmpty)
                break;
            // Everything queued now (up to a bound) is one batch and one commit.
            while (_batch.Count < _maxBatch && _queue.TryDequeue(out var item))
            {
                if (_batch.Count > 0)
                    _signal.Wait(0);
                _batch.Add(item);
                item.Execute(session);
            }
            try
            {
                if (_exchange.Commit() > 0)
                {
                    foreach (var observer in _observers)
                        observer.Committed();
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or Npgsql.NpgsqlException or InvalidOperationException)
            {
                _fault = e;
                foreach (var item in _batch)
                    item.Fail(new ExchangeStoppedException(e));
                _batch.Clear();
                while (_queue.TryDequeue(out var left))
                    left.Fail(new ExchangeStoppedException(e));
                return;
            }
            foreach (var item in _batch)
                item.Complete();
            _batch.Clear();
            _events.Clear();
        }
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

    private IReadOnlyList<ExchangeEvent> Submit(in ExchangeCommand command)
    {
        foreach (var observer in _observers)
            observer.Before(command, replaying: false);
        var first = _events.Count;
        _exchange.Submit(command);
        return _events.GetRange(first, _events.Count - first);
    }

    public void Dispose()
    {
        _stopping = true;
        _signal.Release();
        if (Thread.CurrentThread != _thread)
            _thread.Join();
        _exchange.Dispose();
        _signal.Dispose();
    }

    /// <summary>What work on the engine thread may do: submit commands and read the engine.</summary>
    internal sealed class EngineSession(EngineLoop loop)
    {
        public MatchingEngine Engine => loop._exchange.Engine;

        /// <summary>Milliseconds since 1970 by the exchange's clock.</summary>
        public long Now => loop._time.GetUtcNow().ToUnixTimeMilliseconds();

        /// <summary>Runs and journals one command; its events (an answer may only be given once the batch commits).</summary>
        public IReadOnlyList<ExchangeEvent> Submit(in ExchangeCommand command) => loop.Submit(command);

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

    private abstract class Work
    {
        public abstract void Execute(EngineSession session);

        public abstract void Complete();

        public abstract void Fail(Exception e);
    }

    private sealed class Work<T>(Func<EngineSession, T> work) : Work
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
