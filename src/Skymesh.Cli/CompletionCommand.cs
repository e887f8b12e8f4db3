using System.CommandLine;

namespace Skymesh.Cli;

/// <summary>
/// <c>skymesh completion bash|zsh|fish</c>: a script that completes commands and options by asking skymesh itself
/// (System.CommandLine's <c>[suggest]</c> directive), so it never falls behind the program.
/// </summary>
internal static class CompletionCommand
{
    public static Command Create()
    {
        var shell = new Argument<string>("shell") { Description = "bash, zsh or fish." };
        shell.AcceptOnlyFromAmong("bash", "zsh", "fish");
        var command = new Command("completion", "Print a shell completion script. bash: source <(skymesh completion bash); zsh: the same in ~/.zshrc; fish: skymesh completion fish | source.") { shell };
        command.SetAction(parse =>
        {
            Console.Write(parse.GetValue(shell) switch
            {
                "bash" => Bash,
                "zsh" => "autoload -U +X bashcompinit && bashcompinit\n" + Bash,
                _ => Fish,
            });
            return 0;
        });
        return command;
    }

    private const string Bash = """
        # skymesh completion for bash: source <(skymesh completion bash)
        _skymesh_complete() {
            local IFS=$'\n'
            local words
            words=$(skymesh "[suggest:${COMP_POINT}]" "${COMP_LINE}" 2>/dev/null | grep -v '^/')
            COMPREPLY=( $(compgen -W "${words}" -- "${COMP_WORDS[COMP_CWORD]}") )
        }
        complete -o default -F _skymesh_complete skymesh

        """;

    private const string Fish = """
        # skymesh completion for fish: skymesh completion fish | source
        complete -c skymesh -f -a '(skymesh "[suggest:"(string length -- (commandline -cp))"]" (commandline -cp) 2>/dev/null | string match -v "/*")'

        """;
}
