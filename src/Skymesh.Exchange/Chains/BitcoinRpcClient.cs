using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Skymesh.Exchange.Chains;

/// <summary>An error Bitcoin Core answered a call with: its code (RPC_IN_WARMUP is -28, ...) and message.</summary>
internal sealed class BitcoinRpcException(int code, string message) : Exception(message)
{
    public int Code { get; } = code;
}

/// <summary>
/// Calls Bitcoin Core's JSON-RPC over HTTP: <c>{"jsonrpc":"1.0","id":n,"method":...,"params":[...]}</c> posted to the
/// wallet's URL, answered by <c>{"result":...,"error":null|{"code":n,"message":...},"id":n}</c> (with HTTP 500 or 404
/// for an error under JSON-RPC 1.0, 200 under 2.0: the body decides). A node that cannot be reached, refuses the
/// credentials or answers something else throws <see cref="ChainUnavailableException"/>; an error it answered throws
/// <see cref="BitcoinRpcException"/>.
/// </summary>
internal sealed class BitcoinRpcClient : IDisposable
{
    // A node rescanning for an import can take long to answer; anything slower counts as unreachable.
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromMinutes(5);

    private readonly HttpClient _http;
    private readonly Uri _endpoint;
    private readonly string? _user;
    private readonly string? _password;
    private readonly string? _cookieFile;
    private long _id;

    public BitcoinRpcClient(Uri url, string wallet, string? user, string? password, string? cookieFile, HttpMessageHandler? handler)
    {
        var root = url.AbsoluteUri.EndsWith('/') ? url : new Uri(url.AbsoluteUri + "/");
        _endpoint = wallet.Length == 0 ? root : new Uri(root, "wallet/" + Uri.EscapeDataString(wallet));
        _user = user;
        _password = password;
        _cookieFile = cookieFile;
        _http = handler is null ? new HttpClient() : new HttpClient(handler, disposeHandler: false);
        _http.Timeout = RequestTimeout;
    }

    public async Task<JsonElement> CallAsync(string method, JsonArray parameters, CancellationToken cancellationToken)
    {
        var id = Interlocked.Increment(ref _id);
        var body = new JsonObject
        {
            ["jsonrpc"] = "1.0",
            ["id"] = id,
            ["method"] = method,
            ["params"] = parameters,
        };
        using var request = new HttpRequestMessage(HttpMethod.Post, _endpoint)
        {
            Content = new ByteArrayContent(Encoding.UTF8.GetBytes(body.ToJsonString())),
        };
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes(Credentials())));
        HttpResponseMessage response;
        byte[] content;
        try
        {
            response = await _http.SendAsync(request, HttpCompletionOption.ResponseContentRead, cancellationToken).ConfigureAwait(false);
            content = await response.Content.ReadAsByteArrayAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (HttpRequestException e)
        {
            throw new ChainUnavailableException($"Bitcoin Core at {_endpoint.GetLeftPart(UriPartial.Authority)} cannot be reached: {e.Message}", e);
        }
        catch (OperationCanceledException e) when (!cancellationToken.IsCancellationRequested)
        {
            throw new ChainUnavailableException($"Bitcoin Core did not answer {method} within {RequestTimeout.TotalMinutes} minutes.", e);
        }
        using (response)
        {
            if (response.StatusCode is HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden)
                throw new ChainUnavailableException($"Bitcoin Core refused the RPC credentials (HTTP {(int)response.StatusCode}): check the user and password or the cookie file.");
            JsonDocument document;
            try
            {
                document = JsonDocument.Parse(content);
            }
            catch (JsonException)
            {
                throw new ChainUnavailableException($"Bitcoin Core answered {method} with HTTP {(int)response.StatusCode} and no JSON-RPC reply.");
            }
            using (document)
            {
                var root = document.RootElement;
                if (root.ValueKind != JsonValueKind.Object)
                    throw new ChainUnavailableException($"Bitcoin Core answered {method} with a reply that is not a JSON-RPC object.");
                if (root.TryGetProperty("error", out var error) && error.ValueKind == JsonValueKind.Object)
                {
                    var code = error.TryGetProperty("code", out var c) && c.TryGetInt32(out var n) ? n : 0;
                    var message = error.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.String ? m.GetString()! : "";
                    throw new BitcoinRpcException(code, message);
                }
                if (!response.IsSuccessStatusCode || !root.TryGetProperty("result", out var result))
                    throw new ChainUnavailableException($"Bitcoin Core answered {method} with HTTP {(int)response.StatusCode} and no result.");
                return result.Clone();
            }
        }
    }

    private string Credentials()
    {
        if (_cookieFile is null)
            return $"{_user}:{_password}";
        // The cookie changes each time bitcoind starts, so it is read for every call.
        try
        {
            return File.ReadAllText(_cookieFile).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ChainUnavailableException($"Bitcoin Core's cookie file {_cookieFile} cannot be read (is bitcoind running?): {e.Message}", e);
        }
    }

    public void Dispose() => _http.Dispose();
}

/// <summary>
/// The checksum Bitcoin Core requires after a descriptor (<c>desc#checksum</c>, BIP380): eight characters of a BCH
/// code over the descriptor's characters, taken in groups by their place in the input character set.
/// </summary>
internal static class DescriptorChecksum
{
    private const string InputCharset = "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";
    private const string ChecksumCharset = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";

    public static string Append(string descriptor) => descriptor + "#" + Compute(descriptor);

    public static string Compute(string descriptor)
    {
        ulong checksum = 1;
        var groups = 0;
        var group = 0;
        foreach (var ch in descriptor)
        {
            var position = InputCharset.IndexOf(ch, StringComparison.Ordinal);
            if (position < 0)
                throw new ArgumentException($"A descriptor may not hold '{ch}'.", nameof(descriptor));
            // Each character contributes its low five bits; every three characters, their high bits make one more symbol.
            checksum = PolyMod(checksum, position & 31);
            group = group * 3 + (position >> 5);
            if (++groups == 3)
            {
                checksum = PolyMod(checksum, group);
                groups = 0;
                group = 0;
            }
        }
        if (groups > 0)
            checksum = PolyMod(checksum, group);
        for (var i = 0; i < 8; i++)
            checksum = PolyMod(checksum, 0);
        checksum ^= 1;
        var text = new char[8];
        for (var i = 0; i < 8; i++)
            text[i] = ChecksumCharset[(int)((checksum >> (5 * (7 - i))) & 31)];
        return new string(text);
    }

    private static ulong PolyMod(ulong checksum, int value)
    {
        var top = checksum >> 35;
        checksum = ((checksum & 0x7FFFFFFFF) << 5) ^ (ulong)value;
        if ((top & 1) != 0)
            checksum ^= 0xF5DEE51989;
        if ((top & 2) != 0)
            checksum ^= 0xA9FDCA3312;
        if ((top & 4) != 0)
            checksum ^= 0x1BAB10E32D;
        if ((top & 8) != 0)
            checksum ^= 0x3706B1677A;
        if ((top & 16) != 0)
            checksum ^= 0x644D626FFD;
        return checksum;
    }
}
