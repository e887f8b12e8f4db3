using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

// In-process: no generated project is built per run, so a run costs only the benchmarks themselves. The toolchain is a
// mutator, so it applies to every job — the default one, a class's own ([ShortRunJob]) or one named with --job —
// instead of adding a job of its own beside them.
// Pass BenchmarkDotNet's own arguments through, e.g. --filter '*Parse*'.
var config = DefaultConfig.Instance.AddJob(Job.Default.WithToolchain(InProcessEmitToolchain.Instance).AsMutator());
BenchmarkSwitcher.FromAssembly(typeof(Skymesh.Bench.Micro.SsmpCodecBenchmarks).Assembly).Run(args.Length == 0 ? ["--filter", "*"] : args, config);
