using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Skymesh.Ssmp.Tests.Broker;

/// <summary>
/// A peer that speaks SSMP as raw bytes, so that tests check the wire exactly. Every read has a deadline:
/// a broker that never answers fails the test instead of hanging it.
/// </summary>
internal sealed class RawPeer : IAsyncDisposable
{
    public static readonly TimeSpan ReadTimeout = TimeSpan.FromSeconds(10);

    private readonly Stream _stream;
    private readonly byte[] _buffer = new byte[64 * 1024];
    private int _start;
    private int _end;

    public RawPeer(Stream stream, Socket? socket = null)
    {
        _stream = stream;
        Socket = socket;
    }

    public Socket? Socket { get; }

    /// <summary>Connects over plain TCP; <paramref name="receiveBufferSize"/> is set before connecting so the window stays small.</summary>
    public static async Task<RawPeer> ConnectAsync(IPEndPoint endPoint, int? receiveBufferSize = null)
    {
        var socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        if (receiveBufferSize is { } size)
            socket.ReceiveBufferSize = size;
        using var cts = new CancellationTokenSource(ReadTimeout);
        await socket.ConnectAsync(endPoint, cts.Token);
        return new RawPeer(new NetworkStream(socket, ownsSocket: true), socket);
    }

    /// <summary>Connects and logs in with <c>LOGIN id open</c>, expecting <c>200</c>.</summary>
    public static async Task<RawPeer> LoginAsync(IPEndPoint endPoint, string id, int? receiveBufferSize = null)
    {
        var peer = await ConnectAsync(endPoint, receiveBufferSize);
        await peer.SendAsync($"LOGIN {id} open\n");
        await peer.ExpectLineAsync("200");
        return peer;
    }

    /// <summary>Sends the string as Latin-1, so "\u0000".."\u00FF" are single bytes.</summary>
    public Task SendAsync(string text) => SendAsync(Encoding.Latin1.GetBytes(text));

    public async Task SendAsync(byte[] bytes)
    {
        using var cts = new CancellationTokenSource(ReadTimeout);
        await _stream.WriteAsync(bytes, cts.Token);
        await _stream.FlushAsync(cts.Token);
    }

    /// <summary>Reads exactly <paramref name="expected"/> plus LF, byte for byte (the expected text may contain LF itself).</summary>
    /// <summary>
    /// Publishes <c>MCAST topic n padding</c> for n = 0 … <paramref name="count"/> − 1, a hundred per write, and reads each
    /// one's 200: every event has been queued to the topic's subscribers when this returns.
    /// </summary>
    public async Task PublishNumberedAsync(string topic, int count, string padding)
    {
        for (var sent = 0; sent < count; sent += 100)
        {
            var requests = new StringBuilder();
            for (var i = sent; i < Math.Min(count, sent + 100); i++)
                requests.Append($"MCAST {topic} {i} {padding}\n");
            await SendAsync(requests.ToString());
            for (var i = sent; i < Math.Min(count, sent + 100); i++)
                await ExpectLineAsync("200");
        }
    }

    public Task ExpectLineAsync(string expected) => ExpectBytesAsync(Encoding.Latin1.GetBytes(expected + "\n"));

    public async Task ExpectBytesAsync(byte[] expected)
    {
        for (var i = 0; i < expected.Length; i++)
        {
            var b = await ReadByteAsync(expected, i);
            if (b != expected[i])
            {
                var rest = await ReadRestOfLineAsync();
                Assert.Fail($"Expected {Show(expected)} but got {Show([.. expected.AsSpan(0, i), b, .. rest])}");
            }
        }
    }

    /// <summary>Reads up to and including the next LF; for lines whose payloads are text.</summary>
    public async Task<string> ReadLineAsync()
    {
        var line = new List<byte>();
        while (true)
        {
            var b = await ReadByteAsync(null, 0);
            if (b == '\n')
                return Encoding.Latin1.GetString(line.ToArray());
            line.Add(b);
        }
    }

    /// <summary>Reads as many lines as expected and checks they are those, in any order (events may overtake responses).</summary>
    public async Task ExpectLinesInAnyOrderAsync(params string[] expected)
    {
        var got = new List<string>();
        for (var i = 0; i < expected.Length; i++)
            got.Add(await ReadLineAsync());
        Assert.Equal(expected.Order(StringComparer.Ordinal), got.Order(StringComparer.Ordinal));
    }

    /// <summary>Reads lines until one equals <paramref name="expected"/>; returns the lines before it.</summary>
    public async Task<List<string>> ReadLinesUntilAsync(string expected)
    {
        var lines = new List<string>();
        while (true)
        {
            var line = await ReadLineAsync();
            if (line == expected)
                return lines;
            lines.Add(line);
        }
    }

    /// <summary>Reads <paramref name="count"/> lines and hands each to <paramref name="onLine"/> without its LF; for text lines in bulk.</summary>
    public async Task ReadManyLinesAsync(long count, Action<ReadOnlyMemory<byte>> onLine)
    {
        var partial = new List<byte>();
        while (count > 0)
        {
            if (_start == _end)
                await FillAsync(null, 0);
            var span = _buffer.AsMemory(_start, _end - _start);
            var lf = span.Span.IndexOf((byte)'\n');
            if (lf < 0)
            {
                partial.AddRange(span.Span.ToArray());
                _start = _end;
                continue;
            }
            if (partial.Count > 0)
            {
                partial.AddRange(span.Span[..lf].ToArray());
                onLine(partial.ToArray());
                partial.Clear();
            }
            else
            {
                onLine(span[..lf]);
            }
            _start += lf + 1;
            count--;
        }
    }

    /// <summary>Proves nothing else is queued towards this peer: PING must be answered by the very next line.</summary>
    public async Task ExpectNothingMoreAsync()
    {
        await SendAsync("PING\n");
        await ExpectLineAsync("000 . PONG");
    }

    /// <summary>Expects the broker to close the connection without sending anything more.</summary>
    public async Task ExpectClosedAsync()
    {
        if (_start < _end)
            Assert.Fail($"Expected the connection to close, but got {Show(_buffer.AsSpan(_start, _end - _start).ToArray())}");
        using var cts = new CancellationTokenSource(ReadTimeout);
        var extra = new List<byte>();
        try
        {
            while (true)
            {
                var n = await _stream.ReadAsync(_buffer, cts.Token);
                if (n == 0)
                    break;
                extra.AddRange(_buffer.AsSpan(0, n).ToArray());
            }
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"The connection was still open after {ReadTimeout.TotalSeconds} s" + (extra.Count > 0 ? $"; got {Show([.. extra])}" : ""));
        }
        catch (IOException)
        {
            // A reset is a close too.
        }
        if (extra.Count > 0)
            Assert.Fail($"Expected the connection to close, but got {Show([.. extra])}");
    }

    /// <summary>Reads whatever comes until the broker closes the connection (or resets it); returns the bytes read.</summary>
    public async Task<byte[]> DrainUntilClosedAsync()
    {
        var all = new MemoryStream();
        all.Write(_buffer, _start, _end - _start);
        _start = _end = 0;
        using var cts = new CancellationTokenSource(ReadTimeout);
        try
        {
            while (true)
            {
                var n = await _stream.ReadAsync(_buffer, cts.Token);
                if (n == 0)
                    break;
                all.Write(_buffer, 0, n);
            }
        }
        catch (OperationCanceledException)
        {
            Assert.Fail($"The connection was still open after {ReadTimeout.TotalSeconds} s ({all.Length} bytes read)");
        }
        catch (IOException)
        {
            // A reset is a close too.
        }
        return all.ToArray();
    }

    /// <summary>Half-closes: the broker reads end of stream, this side can still read.</summary>
    public void ShutdownSend() => Socket?.Shutdown(SocketShutdown.Send);

    /// <summary>Drops the connection at once (RST), as a crashing peer would.</summary>
    public void Abort()
    {
        if (Socket is not null)
        {
            try
            {
                Socket.LingerState = new LingerOption(true, 0);
            }
            catch (SocketException)
            {
            }
            catch (ObjectDisposedException)
            {
            }
        }
        _stream.Dispose();
    }

    public ValueTask DisposeAsync()
    {
        _stream.Dispose();
        return ValueTask.CompletedTask;
    }

    private async ValueTask<byte> ReadByteAsync(byte[]? expected, int matched)
    {
        if (_start == _end)
            await FillAsync(expected, matched);
        return _buffer[_start++];
    }

    /// <summary>Reads into the empty buffer, failing the test on a deadline, a reset or the end of the stream.</summary>
    private async ValueTask FillAsync(byte[]? expected, int matched)
    {
        using var cts = new CancellationTokenSource(ReadTimeout);
        int n;
        try
        {
            n = await _stream.ReadAsync(_buffer, cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"Nothing arrived within {ReadTimeout.TotalSeconds} s" + Progress(expected, matched));
        }
        catch (IOException e)
        {
            throw new Xunit.Sdk.XunitException($"The connection failed ({e.Message})" + Progress(expected, matched));
        }
        if (n == 0)
            throw new Xunit.Sdk.XunitException("The broker closed the connection" + Progress(expected, matched));
        _start = 0;
        _end = n;
    }

    private static string Progress(byte[]? expected, int matched) => expected is null
        ? ""
        : $" while expecting {Show(expected)} ({matched} bytes matched)";

    private async Task<byte[]> ReadRestOfLineAsync()
    {
        var rest = new List<byte>();
        try
        {
            while (rest.Count < 2048)
            {
                if (_start == _end)
                {
                    using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(500));
                    var n = await _stream.ReadAsync(_buffer, cts.Token);
                    if (n == 0)
                        break;
                    _start = 0;
                    _end = n;
                }
                var b = _buffer[_start++];
                rest.Add(b);
                if (b == '\n')
                    break;
            }
        }
        catch (Exception e) when (e is OperationCanceledException or IOException)
        {
        }
        return [.. rest];
    }

    public static string Show(byte[] bytes)
    {
        var sb = new StringBuilder("\"");
        foreach (var b in bytes)
        {
            sb.Append(b switch
            {
                (byte)'\n' => "\\n",
                (byte)'\r' => "\\r",
                (byte)'"' => "\\\"",
                (byte)'\\' => "\\\\",
                >= 0x20 and < 0x7F => ((char)b).ToString(),
                _ => $"\\x{b:X2}",
            });
        }
        return sb.Append('"').ToString();
    }
}
