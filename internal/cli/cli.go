// Package cli is pfr's own command line: the commands caddy-pfr adds to
// Caddy's (token, records, export, import, version) and the help that lists them first.
// Every other command is Caddy's and is handed to it unchanged. It knows
// nothing of Caddy: cmd/pfr passes Caddy's commands and a way to run them.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
)

// Exit codes.
const (
	ExitOK    = 0
	ExitError = 1 // the command ran and failed
	ExitUsage = 2 // the command line was wrong; the usage was printed
)

// Env is what a command sees of the world.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string

	// CaddyCommands are Caddy's commands (name → one-line description),
	// including those caddy-pfr registers with Caddy (migrate).
	CaddyCommands map[string]string
	// Caddy runs Caddy's command line with args (as they follow the
	// program name) and returns its exit code.
	Caddy func(args []string) int
	// CheckCaddyArgs, when set, parses the flags and arguments of one of
	// Caddy's commands (args[0]) without running it, and returns the
	// command's usage with what is wrong; a usage error then exits 2 here
	// as it does for caddy-pfr's own commands.
	CheckCaddyArgs func(args []string) (usage string, err error)
	// Version is caddy-pfr's version and Caddy's, one line each.
	Version string
}

// command is one of caddy-pfr's commands.
type command struct {
	name, usage, short string
	// run runs the command; nil hands it to Caddy (which has it).
	run func(env *Env, args []string) int
}

// ownOrder is the order of caddy-pfr's commands in the help.
var ownOrder = []string{"run", "token", "records", "export", "import", "migrate", "version"}

// commands are those this package implements or describes itself.
func commands() map[string]*command {
	return map[string]*command{
		"run": {name: "run", usage: "--config <Caddyfile>",
			short: "Starts the gateway in the foreground (Caddy's run): pfr run --config Caddyfile.example"},
		"token":   tokenCommand(),
		"records": recordsCommand(),
		"export":  exportCommand(),
		"import":  importCommand(),
		"version": {name: "version", usage: "", short: "Prints caddy-pfr's and Caddy's versions",
			run: func(env *Env, args []string) int {
				if len(args) > 0 {
					return usageError(env, versionUsage, "version takes no arguments")
				}
				fmt.Fprintln(env.Stdout, env.Version)
				return ExitOK
			}},
	}
}

const versionUsage = "Usage: pfr version\n\nPrints caddy-pfr's and Caddy's versions.\n"

// Run runs pfr with args (os.Args[1:]) and returns the exit code.
func Run(args []string, env *Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	own := commands()
	if len(args) == 0 {
		help(env.Stderr, env, own)
		return ExitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "-h", "--help", "-help":
		help(env.Stdout, env, own)
		return ExitOK
	case "help":
		if len(rest) == 0 {
			help(env.Stdout, env, own)
			return ExitOK
		}
		if c, ok := own[rest[0]]; ok && c.run != nil {
			return c.run(env, []string{"--help"})
		}
		if _, ok := env.CaddyCommands[rest[0]]; ok || rest[0] == "run" {
			return env.Caddy(args)
		}
		fmt.Fprintf(env.Stderr, "pfr: unknown command %q\n\n", rest[0])
		help(env.Stderr, env, own)
		return ExitUsage
	}
	if c, ok := own[name]; ok && c.run != nil {
		return c.run(env, rest)
	}
	if _, ok := env.CaddyCommands[name]; ok {
		if env.CheckCaddyArgs != nil {
			if usage, err := env.CheckCaddyArgs(args); err != nil {
				return usageError(env, usage, "%s: %v", name, err)
			}
		}
		return env.Caddy(args)
	}
	fmt.Fprintf(env.Stderr, "pfr: unknown command %q\n\n", name)
	help(env.Stderr, env, own)
	return ExitUsage
}

// help prints caddy-pfr's commands, then Caddy's.
func help(w io.Writer, env *Env, own map[string]*command) {
	fmt.Fprint(w, `pfr is Caddy with caddy-pfr built in: a gateway that gives every person a
FHIR server address of their own (a Personal FHIR Record).

Usage: pfr <command> [flags]

caddy-pfr's commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	listed := map[string]bool{}
	for _, name := range ownOrder {
		short := ""
		if c, ok := own[name]; ok {
			short = c.short
		} else if s, ok := env.CaddyCommands[name]; ok {
			short = s
		} else {
			continue
		}
		listed[name] = true
		fmt.Fprintf(tw, "  %s\t%s\n", name, short)
	}
	_ = tw.Flush()
	fmt.Fprint(w, "\nCaddy's commands:\n")
	var names []string
	for name := range env.CaddyCommands {
		if !listed[name] {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(tw, "  %s\t%s\n", name, env.CaddyCommands[name])
	}
	_ = tw.Flush()
	fmt.Fprint(w, `
"pfr help <command>" or "pfr <command> --help" explains one.
Start with the README and docs/walkthrough.md; the docs are in docs/.
`)
}

// usageError prints what is wrong and the usage, and returns ExitUsage.
func usageError(env *Env, usage, format string, a ...any) int {
	fmt.Fprintf(env.Stderr, "pfr: "+format+"\n\n", a...)
	fmt.Fprint(env.Stderr, usage)
	return ExitUsage
}

// parse parses args with fs, flags and positional arguments in any order,
// and returns the positional ones. -h and --help print usage to stdout and
// return errHelp.
func parse(env *Env, fs *flag.FlagSet, usage string, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(env.Stdout, usage)
			return nil, errHelp
		}
		if err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// errHelp says the usage was asked for, and printed.
var errHelp = errors.New("help printed")
