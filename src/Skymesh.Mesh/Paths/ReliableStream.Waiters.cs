using System.Threading.Tasks.Sources;

namespace Skymesh.Mesh.Paths;

public sealed partial class ReliableStream
{
    /// <summary>
    /// The one pending read: its buffer is filled straight from arriving segments. Reused, so waiting
    /// allocates nothing; continuations never run inline, so completing it under the stream's lock (on the
    /// receive loop) cannot run application code there.
    /// </summary>
    private sealed class ReadWaiter : IValueTaskSource<int>
    {
        private ManualResetValueTaskSourceCore<int> _core = new() { RunContinuationsAsynchronously = true };
        private CancellationTokenRegistration _registration;

        public bool Active { get; private set; }

        public Memory<byte> Buffer { get; private set; }

        public CancellationToken Token { get; private set; }

        public ValueTask<int> Start(Memory<byte> buffer, CancellationToken token)
        {
            _core.Reset();
            Active = true;
            Buffer = buffer;
            Token = token;
            return new ValueTask<int>(this, _core.Version);
        }

        public void Watch(CancellationTokenRegistration registration) => _registration = registration;

        public void Complete(int read)
        {
            Finish();
            _core.SetResult(read);
        }

        public void Fail(Exception error)
        {
            Finish();
            _core.SetException(error);
        }

        private void Finish()
        {
            Active = false;
            Buffer = default;
            Token = default;
            // Unregister, not Dispose: Dispose would wait for a running cancellation callback, which may be
            // waiting for the lock this is called under.
            _registration.Unregister();
            _registration = default;
        }

        public int GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }

    /// <summary>The one pending write: the part of the caller's data that did not fit the send buffer yet.</summary>
    private sealed class WriteWaiter : IValueTaskSource
    {
        private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };
        private CancellationTokenRegistration _registration;

        public bool Active { get; private set; }

        public ReadOnlyMemory<byte> Remaining { get; set; }

        public CancellationToken Token { get; private set; }

        public ValueTask Start(ReadOnlyMemory<byte> remaining, CancellationToken token)
        {
            _core.Reset();
            Active = true;
            Remaining = remaining;
            Token = token;
            return new ValueTask(this, _core.Version);
        }

        public void Watch(CancellationTokenRegistration registration) => _registration = registration;

        public void Complete()
        {
            Finish();
            _core.SetResult(true);
        }

        public void Fail(Exception error)
        {
            Finish();
            _core.SetException(error);
        }

        private void Finish()
        {
            Active = false;
            Remaining = default;
            Token = default;
            _registration.Unregister();
            _registration = default;
        }

        public void GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}
