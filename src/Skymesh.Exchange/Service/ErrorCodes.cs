using System.Text;
using System.Text.Json;
using Skymesh.Exchange.Matching;
using Skymesh.Ssmp.Rpc;

namespace Skymesh.Exchange.Service;

/// <summary>The API's error codes (docs/exchange-api.md, "Errors") and how an error travels: an SSMP call's failure status and a JSON body.</summary>
public static class ErrorCodes
{
    /// <summary>The code of an engine refusal: its name in snake case ("InsufficientFunds" → "insufficient_funds").</summary>
    public static string Of(RejectReason reason)
    {
        var name = reason.ToString();
        var text = new StringBuilder(name.Length + 4);
        for (var i = 0; i < name.Length; i++)
        {
            if (char.IsUpper(name[i]) && i > 0)
                text.Append('_');
            text.Append(char.ToLowerInvariant(name[i]));
        }
        return text.ToString();
    }

    /// <summary>The call status of an engine refusal: 404 for what does not exist, 403 for what is not the caller's, 422 for the rest.</summary>
    public static int Status(RejectReason reason) => reason switch
    {
        RejectReason.UnknownOrder or RejectReason.UnknownMarket or RejectReason.UnknownAsset or RejectReason.UnknownOwner => 404,
        RejectReason.NotYourOrder or RejectReason.AccountFrozen => 403,
        _ => 422,
    };
}

/// <summary>
/// A refused request: thrown by a handler, it becomes the call's failure with <see cref="SsmpRpcException.Status"/> and
/// a JSON body <c>{"code", "message", …}</c> that the client reads back.
/// </summary>
public sealed class ExchangeApiException : Exception
{
    public ExchangeApiException(int status, string code, string message, IReadOnlyDictionary<string, object?>? details = null)
        : base(message)
    {
        Status = status;
        Code = code;
        Details = details ?? new Dictionary<string, object?>();
    }

    public ExchangeApiException()
    {
        Code = "";
        Details = new Dictionary<string, object?>();
    }

    public ExchangeApiException(string message)
        : base(message)
    {
        Code = "";
        Details = new Dictionary<string, object?>();
    }

    public ExchangeApiException(string message, Exception innerException)
        : base(message, innerException)
    {
        Code = "";
        Details = new Dictionary<string, object?>();
    }

    public int Status { get; }

    public string Code { get; }

    public IReadOnlyDictionary<string, object?> Details { get; }

    public SsmpRpcException ToRpc()
    {
        var body = new Dictionary<string, object?> { ["code"] = Code, ["message"] = Message };
        foreach (var (key, value) in Details)
            body[key] = value;
        return new SsmpRpcException(Status, JsonSerializer.Serialize(body));
    }

    /// <summary>The error a failed call carries, when it came from an exchange; null for a plain SSMP failure (no answer, no method).</summary>
    public static ExchangeApiException? FromRpc(SsmpRpcException e)
    {
        ArgumentNullException.ThrowIfNull(e);
        if (!e.Message.StartsWith('{'))
            return null;
        try
        {
            using var document = JsonDocument.Parse(e.Message);
            var root = document.RootElement;
            var details = new Dictionary<string, object?>();
            foreach (var property in root.EnumerateObject())
            {
                if (property.Name is not ("code" or "message"))
                    details[property.Name] = property.Value.Clone();
            }
            return new ExchangeApiException(e.Status, root.GetProperty("code").GetString() ?? "", root.GetProperty("message").GetString() ?? "", details);
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
        {
            return null;
        }
    }
}
