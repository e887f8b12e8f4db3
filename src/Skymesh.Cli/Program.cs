return await Skymesh.Cli.SkymeshProgram.RunAsync(args);
