using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// In-process: no generated project is built per run, so a run costs only the benchmarks themselves.
// Pass BenchmarkDotNet's own arguments through, e.g. --filter '*Parse*'.
var config = DefaultConfig.Instance.AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance));
BenchmarkSwitcher.FromAssembly(typeof(Skymesh.Bench.Micro.SsmpCodecBenchmarks).Assembly).Run(args.Length == 0 ? ["--filter", "*"] : args, config);
