// Command ssehub runs a server-sent events hub and talks to one.
//
//	ssehub serve      run the hub
//	ssehub publish    publish the JSON message read on stdin
//	ssehub subscribe  print a stream's events as JSON lines
//	ssehub version    print the version
//	ssehub token      mint a JWT for development and tests
//	ssehub bench      measure a hub under load
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "ssehub: "+err.Error())
		os.Exit(1)
	}
}

// command is one subcommand of ssehub.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"serve", "run the hub", runServe},
		{"publish", "publish the JSON message read on stdin", runPublish},
		{"subscribe", "print a stream's events as JSON lines", runSubscribe},
		{"version", "print the version", runVersion},
		{"token", "mint a JWT for development and tests", runToken},
		{"bench", "measure a hub under load", runBench},
	}
}

// run runs the ssehub command line args. Errors come back as one line
// without the "ssehub: " prefix; flag.ErrHelp means help was printed.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errors.New("no command given")
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		usage(stdout)
		return flag.ErrHelp
	}
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
		if c.name == name {
			if !slices.ContainsFunc(args[1:], isHelpFlag) {
				checkEnvironment(stderr)
			}
			if err := c.run(ctx, args[1:], stdin, stdout, stderr); err != nil {
				if errors.Is(err, flag.ErrHelp) {
					return err
				}
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		}
	}
	if near := closest(name, names); len(near) > 0 {
		return fmt.Errorf("unknown command %q; did you mean %s? (see 'ssehub --help')", name, joinOr(near))
	}
	return fmt.Errorf("unknown command %q; run 'ssehub --help' for the commands", name)
}

func isHelpFlag(arg string) bool {
	switch arg {
	case "-h", "-help", "--h", "--help":
		return true
	}
	return false
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "ssehub is a server-sent events hub.")
	fmt.Fprintln(w, "\nUsage:\n  ssehub <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'ssehub <command> --help' for a command's flags and examples. Settings of a")
	fmt.Fprintln(w, "deployment can also come from SSEHUB_* environment variables: serve's --history-size")
	fmt.Fprintln(w, "is SSEHUB_HISTORY_SIZE. A variable means the same to every command that reads it;")
	fmt.Fprintln(w, "--help shows each flag's.")
}
