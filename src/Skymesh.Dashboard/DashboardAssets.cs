using System.Collections.Frozen;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Http;

namespace Skymesh.Dashboard;

/// <summary>
/// The dashboard's files, embedded in this assembly (wwwroot): <c>/</c> is the page, <c>/assets/NAME</c> the rest. Each
/// is served with a strong ETag, so a browser asks again cheaply, and with headers that keep the page from being framed or
/// from running anything but its own scripts.
/// </summary>
public static class DashboardAssets
{
    /// <summary>What the page may load: only its own files and the node's API; no inline script, no frame around it.</summary>
    public const string ContentSecurityPolicy =
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

    private sealed record Asset(byte[] Content, string ContentType, string ETag);

    private static readonly FrozenDictionary<string, Asset> Files = Load();

    /// <summary>The names of the embedded files (index.html, app.js, …).</summary>
    public static IEnumerable<string> Names => Files.Keys;

    private static FrozenDictionary<string, Asset> Load()
    {
        var assembly = typeof(DashboardAssets).Assembly;
        var files = new Dictionary<string, Asset>(StringComparer.Ordinal);
        foreach (var resource in assembly.GetManifestResourceNames())
        {
            if (!resource.StartsWith("wwwroot/", StringComparison.Ordinal))
                continue;
            using var stream = assembly.GetManifestResourceStream(resource)!;
            using var copy = new MemoryStream();
            stream.CopyTo(copy);
            var content = copy.ToArray();
            var name = resource["wwwroot/".Length..];
            files[name] = new Asset(content, ContentTypeOf(name), $"\"{Convert.ToHexStringLower(SHA256.HashData(content))[..32]}\"");
        }
        return files.ToFrozenDictionary(StringComparer.Ordinal);
    }

    private static string ContentTypeOf(string name) => Path.GetExtension(name).ToLowerInvariant() switch
    {
        ".html" => "text/html; charset=utf-8",
        ".js" => "text/javascript; charset=utf-8",
        ".css" => "text/css; charset=utf-8",
        ".svg" => "image/svg+xml",
        ".png" => "image/png",
        ".json" => "application/json",
        ".txt" or ".md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };

    /// <summary>The headers every dashboard response carries (the API's too: they cost nothing and close doors).</summary>
    public static void AddSecurityHeaders(HttpResponse response)
    {
        ArgumentNullException.ThrowIfNull(response);
        var headers = response.Headers;
        headers.XContentTypeOptions = "nosniff";
        headers.XFrameOptions = "DENY";
        headers["Referrer-Policy"] = "no-referrer";
        headers.ContentSecurityPolicy = ContentSecurityPolicy;
    }

    /// <summary>Writes the file <paramref name="name"/> (<c>index.html</c> for the page); false when there is none.</summary>
    public static async Task<bool> TryServeAsync(HttpContext context, string name)
    {
        ArgumentNullException.ThrowIfNull(context);
        if (!Files.TryGetValue(name, out var asset))
            return false;
        var response = context.Response;
        AddSecurityHeaders(response);
        response.Headers.ETag = asset.ETag;
        // Always asked again (the node may have been upgraded), answered with 304 while unchanged.
        response.Headers.CacheControl = "no-cache";
        if (context.Request.Headers.IfNoneMatch.ToString() == asset.ETag)
        {
            response.StatusCode = StatusCodes.Status304NotModified;
            return true;
        }
        response.ContentType = asset.ContentType;
        response.ContentLength = asset.Content.Length;
        if (!HttpMethods.IsHead(context.Request.Method))
            await response.Body.WriteAsync(asset.Content, context.RequestAborted);
        return true;
    }

    /// <summary>The version of the page: one hash of every file, for people and tests to tell builds apart.</summary>
    public static string Version { get; } = Convert.ToHexStringLower(SHA256.HashData(
        Files.OrderBy(f => f.Key, StringComparer.Ordinal).SelectMany(f => f.Value.Content).ToArray()))[..12];
}
