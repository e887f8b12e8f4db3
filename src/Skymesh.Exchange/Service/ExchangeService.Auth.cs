using System.Text;
using System.Text.Json;
using Skymesh.Identity;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Exchange.Service;

public sealed partial class ExchangeService
{
    /// <summary>First byte of a signed request's body; a body starting with '{' is plain JSON (session authentication).</summary>
    public const byte SignedMarker = (byte)'S';

    /// <summary>A request after authentication: whose it is and its JSON arguments.</summary>
    private sealed class Call(string from, string method, string? account, JsonElement args, AccountGate? gate)
    {
        public string From { get; } = from;
        public string Method { get; } = method;

        /// <summary>The account the request acts for (null for a public method called without one).</summary>
        public string? Account { get; } = account;

        public JsonElement Args { get; } = args;
        public AccountGate? Gate { get; } = gate;

        public string RequireAccount() => Account ?? throw new ExchangeApiException(401, "unauthenticated", "This method acts on an account: sign the request or log in with the key scheme.");
    }

    /// <summary>
    /// One account's replay guard and rate limit: the nonces of requests inside the time window, and a token bucket of
    /// <see cref="ExchangeServiceOptions.RateLimitBurst"/> refilled at <see cref="ExchangeServiceOptions.RateLimitPerSecond"/>.
    /// </summary>
    private sealed class AccountGate(double burst)
    {
        private readonly NonceSet _nonces = new();
        private double _tokens = burst;
        private long _refilled;

        public Lock Lock { get; } = new();

        /// <summary>Tokens left after the last request (under <see cref="Lock"/>).</summary>
        public double Tokens => _tokens;

        /// <summary>False when the nonce was seen inside the window. Forgets nonces older than <paramref name="forgetBefore"/>.</summary>
        public bool TryUseNonce(ulong nonce, long time, long forgetBefore) => _nonces.TryUse(nonce, time, forgetBefore);

        /// <summary>Takes <paramref name="cost"/> tokens, or says how long until there are enough (ms).</summary>
        public bool TryTake(int cost, long now, double perSecond, double burst, out long retryAfterMs)
        {
            if (_refilled != 0)
                _tokens = Math.Min(burst, _tokens + (now - _refilled) * perSecond / 1000.0);
            _refilled = now;
            if (_tokens >= cost)
            {
                _tokens -= cost;
                retryAfterMs = 0;
                return true;
            }
            retryAfterMs = (long)Math.Ceiling((cost - _tokens) * 1000.0 / perSecond);
            return false;
        }
    }

    /// <summary>The bytes a signed request's signature covers: the exchange's SSMP id, 0, the method, 0, the JSON body.</summary>
    public static byte[] SignedMessage(string exchangeId, string method, ReadOnlySpan<byte> json)
    {
        var message = new byte[exchangeId.Length + 1 + method.Length + 1 + json.Length];
        var at = Encoding.ASCII.GetBytes(exchangeId, message);
        message[at++] = 0;
        at += Encoding.ASCII.GetBytes(method, message.AsSpan(at));
        message[at++] = 0;
        json.CopyTo(message.AsSpan(at));
        return message;
    }

    /// <summary>
    /// Authenticates and checks a request: who it is from (the broker-proven sender, or the key of its signature), its
    /// timestamp against the window, its nonce against replays, and the account's rate limit.
    /// </summary>
    private Call Admit(SsmpRpcRequest request, bool needsAccount, int cost)
    {
        var body = request.Body.Span;
        string? account = null;
        ReadOnlySpan<byte> json;
        if (body.Length > 0 && body[0] == SignedMarker)
        {
            if (body.Length < 1 + 32 + 64 + 2)
                throw new ExchangeApiException(400, "bad_request", "A signed request is 'S', a 32-byte key, a 64-byte signature and the JSON body.");
            if (!NodeAddress.TryFromBytes(body.Slice(1, 32), out var key) || key.IsEmpty)
                throw new ExchangeApiException(401, "bad_signature", "The signing key is not a valid secp256k1 x-only key.");
            json = body[97..];
            account = key.ToString();
            var verifier = _verifiers.Count < 100_000 ? _verifiers.GetOrAdd(account, _ => new NodeVerifier(key)) : new NodeVerifier(key);
            if (!verifier.Verify(RequestPurpose, SignedMessage(Id, request.Method, json), body.Slice(33, 64)))
                throw new ExchangeApiException(401, "bad_signature", "The signature does not verify for this key, exchange, method and body.");
        }
        else
        {
            json = body;
            if (_options.SessionAuth)
                account = SessionAccount(request.From);
        }
        JsonElement args;
        try
        {
            var reader = new Utf8JsonReader(json.IsEmpty ? "{}"u8 : json);
            args = JsonElement.ParseValue(ref reader);
        }
        catch (JsonException e)
        {
            throw new ExchangeApiException(400, "bad_request", $"The body is not JSON: {e.Message}");
        }
        if (args.ValueKind != JsonValueKind.Object)
            throw new ExchangeApiException(400, "bad_request", "The body must be a JSON object.");
        if (!needsAccount)
            return new Call(request.From, request.Method, account, args, null);
        if (account is null)
            throw Unauthenticated();
        var ts = Long(args, "ts") ?? throw NoTs();
        var nonce = ULong(args, "nonce") ?? throw NoNonce();
        return new Call(request.From, request.Method, account, args, Gate(account, ts, nonce, cost));
    }

    private ExchangeApiException Unauthenticated() => new(401, "unauthenticated", _options.SessionAuth
        ? "Sign the request, or log into the broker with the key scheme so that your SSMP id is your account key."
        : "This exchange does not trust its broker's logins: every request must be signed.");

    private static ExchangeApiException NoTs() => new(400, "bad_request", "Every request needs 'ts', the client's time in milliseconds since 1970.");

    private static ExchangeApiException NoNonce() => new(400, "bad_request", "Every request needs 'nonce', a number the account never used before inside the time window.");

    /// <summary>Checks a request's time and nonce and takes its cost from the account's rate budget.</summary>
    private AccountGate Gate(string account, long ts, ulong nonce, int cost)
    {
        var now = Now;
        var window = (long)_options.RequestWindow.TotalMilliseconds;
        if (Math.Abs(now - ts) > window)
        {
            throw new ExchangeApiException(400, "clock_skew",
                $"The request's time is {Math.Abs(now - ts)} ms {(ts < now ? "behind" : "ahead of")} the exchange's clock (at most {window} ms either way).",
                new Dictionary<string, object?> { ["serverTime"] = now, ["windowMs"] = window });
        }
        // Nonces live in memory: a request made before this start (a replay of one seen then) is refused as stale.
        if (ts < _started)
        {
            throw new ExchangeApiException(400, "clock_skew", $"The request's time is before the exchange started ({_started}); send it again with the current time.",
                new Dictionary<string, object?> { ["serverTime"] = now, ["windowMs"] = window });
        }
        if (!_gates.TryGetValue(account, out var gate))
            gate = _gates.GetOrAdd(account, static (_, burst) => new AccountGate(burst), _options.RateLimitBurst);
        lock (gate.Lock)
        {
            if (!gate.TryUseNonce(nonce, ts, now - 2 * window))
                throw new ExchangeApiException(409, "replayed", $"Nonce {nonce} was already used by this account.");
            if (!gate.TryTake(cost, now, _options.RateLimitPerSecond, _options.RateLimitBurst, out var retryAfter))
            {
                throw new ExchangeApiException(429, "rate_limited", $"Rate limit: {_options.RateLimitPerSecond} requests a second, {_options.RateLimitBurst} at once.",
                    new Dictionary<string, object?> { ["retryAfterMs"] = retryAfter, ["rateLimit"] = RateLimit(gate) });
            }
        }
        return gate;
    }

    /// <summary>
    /// The account a session's SSMP id names: the id itself when it is a key (the broker let it in only with that key's
    /// signature), else null. Remembered, since checking that 64 hex digits are a point on the curve takes a square root.
    /// </summary>
    private string? SessionAccount(string from)
    {
        if (_sessionAccounts.TryGetValue(from, out var known))
            return known;
        var account = from.Length == NodeAddress.TextLength && NodeAddress.TryParse(from, out var sender) && !sender.IsEmpty ? sender.ToString() : null;
        if (_sessionAccounts.Count < 100_000)
            _sessionAccounts[from] = account;
        return account;
    }

    private Dictionary<string, object?> RateLimit(AccountGate gate) => new()
    {
        ["limit"] = _options.RateLimitBurst,
        ["remaining"] = (long)Math.Floor(gate.Tokens),
        ["perSecond"] = _options.RateLimitPerSecond,
    };

    private long Now => _time.GetUtcNow().ToUnixTimeMilliseconds();

    /// <summary>True when the request gives <paramref name="name"/> a value (null counts as not given).</summary>
    private static bool Has(JsonElement args, string name) =>
        args.ValueKind == JsonValueKind.Object && args.TryGetProperty(name, out var v) && v.ValueKind != JsonValueKind.Null;

    private static long? Long(JsonElement args, string name) =>
        Has(args, name) && args.TryGetProperty(name, out var v) ? v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var n) ? n
            : throw new ExchangeApiException(400, "bad_request", $"'{name}' must be a whole number.") : null;

    private static ulong? ULong(JsonElement args, string name) =>
        Has(args, name) && args.TryGetProperty(name, out var v) ? v.ValueKind == JsonValueKind.Number && v.TryGetUInt64(out var n) ? n
            : throw new ExchangeApiException(400, "bad_request", $"'{name}' must be a whole number from 0 to 2^64-1.") : null;

    private static string? String(JsonElement args, string name) =>
        Has(args, name) && args.TryGetProperty(name, out var v) ? v.ValueKind == JsonValueKind.String ? v.GetString()
            : throw new ExchangeApiException(400, "bad_request", $"'{name}' must be a string.") : null;

    private static bool? Bool(JsonElement args, string name) =>
        Has(args, name) && args.TryGetProperty(name, out var v) ? v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new ExchangeApiException(400, "bad_request", $"'{name}' must be true or false."),
        } : null;

    private static string Required(JsonElement args, string name) =>
        String(args, name) ?? throw new ExchangeApiException(400, "bad_request", $"'{name}' is required.");

    private static string Required<TFields>(TFields args, string name)
        where TFields : IOrderFields =>
        args.String(name) ?? throw new ExchangeApiException(400, "bad_request", $"'{name}' is required.");
}
