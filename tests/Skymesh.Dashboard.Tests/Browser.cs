using Microsoft.Playwright;

[assembly: AssemblyFixture(typeof(Skymesh.Dashboard.Tests.Chromium))]

namespace Skymesh.Dashboard.Tests;

/// <summary>
/// Debian's chromium, headless, driven by Playwright (test.sh installs it when missing; Playwright's own browser download
/// is never used). One browser for the whole run; each test opens its own context, so cookies never leak between tests.
/// </summary>
public sealed class Chromium : IAsyncLifetime
{
    private IPlaywright? _playwright;

    public IBrowser Browser { get; private set; } = null!;

    /// <summary>Where each test's screenshots go: $SKYMESH_SCREENSHOTS (bench/dashboard-screenshots.sh sets docs/screenshots), else the test output.</summary>
    public static string ScreenshotDirectory { get; } = Environment.GetEnvironmentVariable("SKYMESH_SCREENSHOTS") is { Length: > 0 } dir
        ? dir
        : Path.Combine(AppContext.BaseDirectory, "screenshots");

    public async ValueTask InitializeAsync()
    {
        var executable = Environment.GetEnvironmentVariable("SKYMESH_CHROMIUM") is { Length: > 0 } given ? given
            : new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser" }.FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("No chromium: install Debian's chromium package (test.sh does), or set SKYMESH_CHROMIUM to a Chromium executable.");
        _playwright = await Playwright.CreateAsync();
        Browser = await _playwright.Chromium.LaunchAsync(new BrowserTypeLaunchOptions
        {
            ExecutablePath = executable,
            Headless = true,
            Args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        });
    }

    /// <summary>A fresh browser context (its own cookies) with one page, at a laptop's size unless told otherwise.</summary>
    public async Task<IPage> NewPageAsync(int width = 1280, int height = 860)
    {
        var context = await Browser.NewContextAsync(new BrowserNewContextOptions { ViewportSize = new ViewportSize { Width = width, Height = height } });
        context.SetDefaultTimeout(30_000);
        return await context.NewPageAsync();
    }

    public static async Task ScreenshotAsync(IPage page, string name)
    {
        Directory.CreateDirectory(ScreenshotDirectory);
        await page.ScreenshotAsync(new PageScreenshotOptions { Path = Path.Combine(ScreenshotDirectory, name + ".png"), FullPage = false });
    }

    public async ValueTask DisposeAsync()
    {
        if (Browser is not null)
            await Browser.DisposeAsync();
        _playwright?.Dispose();
    }
}
