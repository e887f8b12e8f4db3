using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using Skymesh.Ssmp.Codec;

namespace Skymesh.Bench.Micro;

/// <summary>
/// The codec paths every message crosses: the broker parses each request, a client parses each event, a client
/// writes each request. All on the 100-byte payload of the load benchmark. The parse paths must not allocate.
/// </summary>
[MemoryDiagnoser]
public class SsmpCodecBenchmarks
{
    private byte[] _ucastRequest = [];
    private byte[] _event = [];
    private byte[] _eightRequests = [];
    private byte[] _payload = [];
    private readonly ArrayBufferWriter<byte> _writer = new(4096);

    [GlobalSetup]
    public void Setup()
    {
        _payload = new byte[100];
        for (var i = 0; i < _payload.Length; i++)
            _payload[i] = (byte)('a' + i % 26);
        var payload = Encoding.ASCII.GetString(_payload);
        _ucastRequest = Encoding.ASCII.GetBytes($"UCAST c42 {payload}\n");
        _event = Encoding.ASCII.GetBytes($"000 c7 UCAST c42 {payload}\n");
        _eightRequests = [.. Enumerable.Repeat(_ucastRequest, 8).SelectMany(r => r)];
    }

    [Benchmark]
    public int ParseUcastRequest()
    {
        SsmpParser.TryParseRequest(_ucastRequest, out var request, out var consumed, out _);
        return consumed + request.Id.Length;
    }

    /// <summary>What the broker does with one read of the load generator's: eight pipelined requests.</summary>
    [Benchmark(OperationsPerInvoke = 8)]
    public int ParseEightPipelinedRequests()
    {
        ReadOnlySpan<byte> data = _eightRequests;
        var total = 0;
        while (SsmpParser.TryParseRequest(data, out var request, out var consumed, out _) == SsmpParseStatus.Complete)
        {
            total += request.Payload.Length;
            data = data[consumed..];
        }
        return total;
    }

    [Benchmark]
    public int ParseEvent()
    {
        SsmpParser.TryParseServerMessage(_event, out var message, out var consumed, out _);
        return consumed + message.From.Length;
    }

    [Benchmark]
    public int WriteUcast()
    {
        _writer.ResetWrittenCount();
        SsmpWriter.WriteUcast(_writer, "c42", _payload);
        return _writer.WrittenCount;
    }
}
