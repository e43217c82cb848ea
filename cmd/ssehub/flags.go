package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// flagSet wraps flag.FlagSet with environment twins (SSEHUB_<NAME>) and a
// usage text that lists them with their defaults.
type flagSet struct {
	*flag.FlagSet
	synopsis string
	out      io.Writer
}

func newFlagSet(name, synopsis string, stdout io.Writer) *flagSet {
	fs := &flagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), synopsis: synopsis, out: stdout}
	// Parse errors come back as one line; help goes to stdout.
	fs.SetOutput(io.Discard)
	return fs
}

// envName is the environment twin of a flag: SSEHUB_ and the flag's name
// in upper case with '-' as '_'.
func envName(flagName string) string {
	return "SSEHUB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse parses args, then fills every flag not given on the command line
// from its environment twin. A list flag takes a comma-separated value.
func (fs *flagSet) parse(args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.printUsage()
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok || set[f.Name] || err != nil {
			return
		}
		values := []string{v}
		if _, list := f.Value.(*listFlag); list {
			values = strings.Split(v, ",")
		}
		for _, v := range values {
			if e := f.Value.Set(strings.TrimSpace(v)); e != nil {
				err = fmt.Errorf("invalid value %q for %s: %v", v, envName(f.Name), e)
				return
			}
		}
	})
	return err
}

func (fs *flagSet) printUsage() {
	w := fs.out
	fmt.Fprintf(w, "Usage: ssehub %s\n\nFlags:\n", fs.synopsis)
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, usage)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, " [$%s]\n", envName(f.Name))
	})
}

// listFlag is a flag that may be given more than once.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}
