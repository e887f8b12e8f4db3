using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Hosting.Systemd;
using Microsoft.Extensions.Hosting.WindowsServices;
using Microsoft.Extensions.Logging;

namespace Skymesh.Cli;

/// <summary>
/// A long-running command (<c>skymesh node</c>, <c>skymesh broker</c>) under a service manager (docs/release.md): as a
/// Windows service it answers the service control manager (start, stop); under systemd with <c>Type=notify</c> it
/// says READY once it is really up and STOPPING when asked to stop. Anywhere else it runs until SIGINT or SIGTERM.
/// Either way the same two steps run: start, and stop cleanly.
/// </summary>
internal static class ServiceHosting
{
    /// <summary>What a service is: start it (it is up when this returns), then stop it.</summary>
    public interface IService
    {
        Task StartAsync(CancellationToken cancellationToken);

        Task StopAsync();
    }

    /// <summary>True when a Windows service control manager or systemd started this process.</summary>
    public static bool UnderServiceManager => WindowsServiceHelpers.IsWindowsService() || SystemdHelpers.IsSystemdService();

    /// <summary>Starts <paramref name="service"/>, runs it until a signal or the service manager stops it, then stops it.</summary>
    public static async Task RunAsync(IService service, string name, CancellationToken cancellationToken)
    {
        if (!UnderServiceManager)
        {
            using var signals = CliSupport.UntilSignal(cancellationToken);
            await service.StartAsync(signals.Token);
            try
            {
                await Task.Delay(Timeout.Infinite, signals.Token);
            }
            catch (OperationCanceledException)
            {
            }
            await service.StopAsync();
            return;
        }
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, ContentRootPath = AppContext.BaseDirectory });
        builder.Logging.ClearProviders();
        builder.Services.AddWindowsService(options => options.ServiceName = name);
        builder.Services.AddSystemd();
        builder.Services.Configure<HostOptions>(options => options.ShutdownTimeout = TimeSpan.FromSeconds(30));
        builder.Services.AddSingleton<IHostedService>(new Hosted(service));
        using var host = builder.Build();
        await host.RunAsync(cancellationToken);
    }

    private sealed class Hosted(IService service) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => service.StartAsync(cancellationToken);

        public Task StopAsync(CancellationToken cancellationToken) => service.StopAsync();
    }
}
