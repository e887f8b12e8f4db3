using System.Buffers;
using System.Text;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Ssmp.Broker;

internal sealed partial class BrokerConnection
{
    private static ReadOnlySpan<byte> Ok => "200\n"u8;
    private static ReadOnlySpan<byte> BadRequest => "400\n"u8;
    private static ReadOnlySpan<byte> NotFound => "404\n"u8;
    private static ReadOnlySpan<byte> NotAllowed => "405\n"u8;
    private static ReadOnlySpan<byte> Conflict => "409\n"u8;
    private static ReadOnlySpan<byte> NotImplemented => "501\n"u8;
    private static ReadOnlySpan<byte> Pong => "000 . PONG\n"u8;

    /// <summary>
    /// Reads while the connection is open. An idle connection waits with a zero-byte read and holds no buffer;
    /// a busy one borrows one from the pool. Each read is parsed to the last whole message and handled before
    /// the next read, so a fast sender is slowed by TCP rather than by our memory.
    /// </summary>
    private async Task ReadLoopAsync()
    {
        var size = _broker.Options.ReceiveBufferSize;
        byte[]? buffer = null;
        var filled = 0;
        try
        {
            while (true)
            {
                if (filled == 0)
                {
                    if (buffer is not null)
                    {
                        _broker.Buffers.Return(buffer);
                        buffer = null;
                    }
                    // A zero-byte read completes when data arrives, without pinning a buffer meanwhile.
                    _ = await _stream.ReadAsync(Memory<byte>.Empty);
                    buffer = _broker.Buffers.Rent(size);
                }
                var n = await _stream.ReadAsync(buffer.AsMemory(filled, size - filled));
                if (n == 0)
                {
                    Abort(DisconnectReason.PeerClosed);
                    return;
                }
                BytesIn += n;
                filled += n;
                Touch();
                var consumed = Process(buffer.AsSpan(0, filled));
                if (consumed < 0)
                    return;
                filled -= consumed;
                if (filled > 0 && consumed > 0)
                    buffer.AsSpan(consumed, filled).CopyTo(buffer);
            }
        }
        finally
        {
            if (buffer is not null)
                _broker.Buffers.Return(buffer);
        }
    }

    /// <summary>Handles every whole request in <paramref name="data"/>; returns bytes consumed, or -1 when the connection is closing.</summary>
    internal int Process(ReadOnlySpan<byte> data)
    {
        var offset = 0;
        while (offset < data.Length)
        {
            // Closed by someone else (eviction, slow consumer, timeout): serve nothing more of what it sent.
            if (Volatile.Read(ref _closed))
                return -1;
            var status = SsmpParser.TryParseRequest(data[offset..], out var request, out var used, out var error);
            if (status == SsmpParseStatus.NeedMoreData)
                break;
            if (status == SsmpParseStatus.Invalid)
            {
                _broker.CountBadRequest();
                Log.BadRequest(_broker.Logger, Serial, error);
                Enqueue(BadRequest);
                CloseAfterFlush(DisconnectReason.BadRequest);
                return -1;
            }
            offset += used;
            RequestCount++;
            if (!Handle(request))
                return -1;
        }
        return offset;
    }

    /// <summary>Handles one request; false when the connection is closing.</summary>
    private bool Handle(in SsmpRequest request)
    {
        if (!LoggedIn)
            return HandleFirst(request);
        switch (request.Verb)
        {
            case SsmpVerb.Ucast:
                var target = _broker.FindById(request.Id);
                if (target is null)
                {
                    _broker.CountUcastNotFound();
                    return Respond(NotFound);
                }
                target.EnqueueEvent(EventPrefix, request.Message);
                return Respond(Ok);

            case SsmpVerb.Mcast:
                var topic = _broker.FindTopic(request.Id);
                if (topic is not null)
                {
                    foreach (var member in topic.Members)
                    {
                        if (member.Connection != this)
                            member.Connection.EnqueueEvent(EventPrefix, request.Message);
                    }
                }
                return Respond(Ok);

            case SsmpVerb.Bcast:
                if (IsAnonymous)
                    return Respond(NotAllowed);
                Broadcast(request.Message);
                return Respond(Ok);

            case SsmpVerb.Subscribe:
                if (IsAnonymous)
                    return Respond(NotAllowed);
                return Subscribe(Text(request.Id), request.Presence, request.Message);

            case SsmpVerb.Unsubscribe:
                if (IsAnonymous)
                    return Respond(NotAllowed);
                return Unsubscribe(Text(request.Id), request.Message);

            case SsmpVerb.Ping:
                return Respond(Pong);

            case SsmpVerb.Pong:
                return true;

            case SsmpVerb.Close:
                Enqueue(Ok);
                CloseAfterFlush(DisconnectReason.CloseRequested);
                return false;

            case SsmpVerb.Login:
                return Respond(NotAllowed);

            default:
                _broker.CountUnknownVerb();
                return Respond(NotImplemented);
        }
    }

    private bool Respond(ReadOnlySpan<byte> response)
    {
        Enqueue(response);
        return true;
    }

    /// <summary>The first request must be LOGIN; anything else is answered 400 and the connection closed.</summary>
    private bool HandleFirst(in SsmpRequest request)
    {
        if (request.Verb != SsmpVerb.Login)
        {
            _broker.CountBadRequest();
            Enqueue(BadRequest);
            CloseAfterFlush(DisconnectReason.BadRequest);
            return false;
        }
        var id = Text(request.Id);
        var scheme = Text(request.Scheme);
        ISsmpAuthenticator? authenticator = null;
        foreach (var a in _broker.Options.Authenticators)
        {
            if (a.Scheme == scheme)
            {
                authenticator = a;
                break;
            }
        }
        var context = new SsmpLoginContext
        {
            Id = id,
            ClientCertificate = _clientCertificate,
            CredentialIsBinary = request.PayloadContent.Length != request.Payload.Length,
            KeyLogin = _broker.KeyLogin,
        };
        var accepted = false;
        if (authenticator is null)
            context.RefusalReason = "unknown scheme";
        else if (authenticator.Scheme != SsmpKeyCredential.Scheme && SsmpKeyCredential.LooksLikeNodeAddress(id))
            context.RefusalReason = "a node address logs in only with the key scheme";
        else if (context.IsAnonymous && !_broker.Options.AllowAnonymous)
            context.RefusalReason = "anonymous logins are not allowed";
        else
            accepted = SafeAuthenticate(authenticator, context, request.PayloadContent);
        if (!accepted)
        {
            Log.LoginRefused(_broker.Logger, Serial, id, scheme, context.RefusalReason ?? "credential rejected");
            // Refused for want of room rather than for a bad credential: close unanswered, so the client retries.
            if (!context.Busy)
                Enqueue("401 "u8, _broker.UnauthorizedPayload, "\n"u8);
            CloseAfterFlush(DisconnectReason.LoginRefused);
            return false;
        }
        EventPrefix = Encoding.ASCII.GetBytes("000 " + id + " ");
        Id = id;
        Assurance = authenticator!.Assurance;
        if (!_broker.Register(this))
        {
            Id = null;
            Log.LoginRefused(_broker.Logger, Serial, id, scheme, "the id is held by a connection that proved more");
            Enqueue("401 "u8, _broker.UnauthorizedPayload, "\n"u8);
            CloseAfterFlush(DisconnectReason.LoginRefused);
            return false;
        }
        return Respond(Ok);
    }

    private bool SafeAuthenticate(ISsmpAuthenticator authenticator, SsmpLoginContext context, ReadOnlySpan<byte> credential)
    {
        try
        {
            return authenticator.Authenticate(context, credential);
        }
        catch (Exception e)
        {
            Log.Unexpected(_broker.Logger, Serial, e);
            return false;
        }
    }

    // SUBSCRIBE t [PRESENCE]: watchers of t hear of the new member; the caller gets its 200 and then, with
    // PRESENCE, one event per current member (spec §5, in that order). All under the topic's lock so no watcher
    // sees a membership twice or its end before its start.
    private bool Subscribe(string name, bool presence, ReadOnlySpan<byte> message)
    {
        lock (_subscriptionsLock)
        {
            // Already left every topic (closed from another thread): joining now would leave a member nobody removes.
            if (Volatile.Read(ref _cleanedUp) != 0)
                return false;
            if (_subscriptions.ContainsKey(name))
                return Respond(Conflict);
            if (_subscriptions.Count >= _broker.Options.MaxSubscriptionsPerConnection)
            {
                Enqueue("429 subscription limit reached\n"u8);
                return true;
            }
            while (true)
            {
                var topic = _broker.GetOrAddTopic(name);
                lock (topic.Sync)
                {
                    if (topic.Dead)
                        continue;
                    var members = topic.Members;
                    foreach (var m in members)
                    {
                        if (m.Presence)
                            m.Connection.EnqueueEvent(EventPrefix, message);
                    }
                    // The 200 goes into this connection's queue before the snapshot, and before any event of the
                    // topic can reach it (it is not a member until below).
                    Enqueue(Ok);
                    if (presence)
                    {
                        foreach (var m in members)
                            EnqueueEvent(m.Connection.EventPrefix, SubscribeLine(topic.Name, m.Presence));
                    }
                    var grown = new Member[members.Length + 1];
                    members.CopyTo(grown, 0);
                    grown[^1] = new Member(this, presence);
                    topic.Members = grown;
                    _subscriptions[name] = topic;
                }
                break;
            }
        }
        return true;
    }

    private static byte[] SubscribeLine(string topic, bool presence) =>
        Encoding.ASCII.GetBytes(presence ? $"SUBSCRIBE {topic} PRESENCE\n" : $"SUBSCRIBE {topic}\n");

    private bool Unsubscribe(string name, ReadOnlySpan<byte> message)
    {
        Topic? topic;
        lock (_subscriptionsLock)
        {
            if (!_subscriptions.Remove(name, out topic))
                return Respond(NotFound);
        }
        Leave(topic, message);
        return Respond(Ok);
    }

    private void Leave(Topic topic, ReadOnlySpan<byte> unsubscribeMessage)
    {
        lock (topic.Sync)
        {
            var members = topic.Members;
            var index = topic.IndexOf(this);
            if (index < 0)
                return;
            var shrunk = new Member[members.Length - 1];
            members.AsSpan(0, index).CopyTo(shrunk);
            members.AsSpan(index + 1).CopyTo(shrunk.AsSpan(index));
            topic.Members = shrunk;
            foreach (var m in shrunk)
            {
                if (m.Presence)
                    m.Connection.EnqueueEvent(EventPrefix, unsubscribeMessage);
            }
            if (shrunk.Length == 0)
            {
                topic.Dead = true;
                _broker.RemoveTopic(topic);
            }
        }
    }

    private void LeaveAllTopics()
    {
        KeyValuePair<string, Topic>[] topics;
        lock (_subscriptionsLock)
        {
            topics = [.. _subscriptions];
            _subscriptions.Clear();
        }
        foreach (var (name, topic) in topics)
            Leave(topic, Encoding.ASCII.GetBytes($"UNSUBSCRIBE {name}\n"));
    }

    // BCAST payload: one event to every other connection that shares at least one topic with the sender.
    private void Broadcast(ReadOnlySpan<byte> message)
    {
        Topic[] topics;
        lock (_subscriptionsLock)
            topics = [.. _subscriptions.Values];
        if (topics.Length == 0)
            return;
        var seen = new HashSet<BrokerConnection>(ReferenceEqualityComparer.Instance);
        foreach (var topic in topics)
        {
            foreach (var m in topic.Members)
            {
                if (m.Connection != this && seen.Add(m.Connection))
                    m.Connection.EnqueueEvent(EventPrefix, message);
            }
        }
    }
}
