package main

// Flags, their environment variables and their help.
//
// Every command parses its flags with a flagSet. To add a flag:
//
//   - to serve: define it in one of the help groups, as in
//     fs.group(groupBroker).Duration("publish-timeout", ...). Its environment
//     variable is named after it: --publish-timeout is SSEHUB_PUBLISH_TIMEOUT.
//     A serve flag outside the groups fails TestServeHelpGrouped.
//   - to another command: define it on the flagSet (fs.String(...)). It reads
//     no environment variable, unless it is the same setting as one that
//     serve (or another command) reads, with the same type and meaning: then
//     fs.env("broker", "SSEHUB_BROKER") makes it read that variable. A
//     variable that two commands read with different types fails
//     TestEnvironmentOneMeaning.
//   - a flag that says what one run does (the message to publish, the
//     events to wait for, the load to generate) reads no variable: operators
//     set SSEHUB_* for a whole deployment, and such a setting would change
//     every command run there.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The groups of serve's --help, in the order it lists them.
const (
	groupListening  = "Listening"
	groupBroker     = "Broker"
	groupStreams    = "Streams"
	groupHistory    = "History"
	groupSecurity   = "Security"
	groupLimits     = "Limits"
	groupOperations = "Operations"
)

// serveGroups are the groups of serve's flags, in help order.
var serveGroups = []string{groupListening, groupBroker, groupStreams, groupHistory, groupSecurity, groupLimits, groupOperations}

// flagSet wraps flag.FlagSet with environment variables, help groups and
// error messages that name the fix.
type flagSet struct {
	*flag.FlagSet
	cmd      string // the command's name, as typed after ssehub
	synopsis string
	about    string   // a paragraph under the usage line
	examples []string // command lines shown in --help
	out      io.Writer

	// envEvery gives every flag an environment variable named after it.
	envEvery bool
	groups   []string // headings in help order
	meta     map[string]*flagMeta
	oneOfs   [][]string

	failed   *valueError     // the first value a flag refused while parsing
	fromArgs map[string]bool // flags given on the command line
	fromEnv  map[string]string
}

// flagMeta is what a flagSet knows of a flag beyond the flag package.
type flagMeta struct {
	group string
	order int // definition order within the flag set, for --help
	env   string
}

func newFlagSet(cmd, synopsis string, stdout io.Writer) *flagSet {
	fs := &flagSet{
		FlagSet:  flag.NewFlagSet(cmd, flag.ContinueOnError),
		cmd:      cmd,
		synopsis: synopsis,
		out:      stdout,
		meta:     map[string]*flagMeta{},
	}
	// Parse errors come back as one line; help goes to stdout.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	if c, ok := stdout.(*flagCatalog); ok {
		c.sets = append(c.sets, fs)
	}
	return fs
}

func (fs *flagSet) metaOf(name string) *flagMeta {
	m := fs.meta[name]
	if m == nil {
		m = &flagMeta{}
		fs.meta[name] = m
	}
	return m
}

// envName is the environment variable named after a flag: SSEHUB_ and the
// flag's name in upper case with '-' as '_'.
func envName(flagName string) string {
	return "SSEHUB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// envOf returns the environment variable a flag reads, or "".
func (fs *flagSet) envOf(name string) string {
	if m := fs.meta[name]; m != nil && m.env != "" {
		return m.env
	}
	if fs.envEvery {
		return envName(name)
	}
	return ""
}

// env makes the flag read the environment variable v when the command line
// does not give it. v must mean what it means to every other command that
// reads it.
func (fs *flagSet) env(flagName, v string) {
	if fs.Lookup(flagName) == nil {
		panic("env: no flag --" + flagName)
	}
	fs.metaOf(flagName).env = v
}

// oneOf declares flags that exclude each other. One given on the command
// line hides the environment variables of the others; two given anywhere
// are an error.
func (fs *flagSet) oneOf(names ...string) { fs.oneOfs = append(fs.oneOfs, names) }

// group returns a definer whose flags are listed under heading in --help.
func (fs *flagSet) group(heading string) flagGroup {
	if !slices.Contains(fs.groups, heading) {
		fs.groups = append(fs.groups, heading)
	}
	return flagGroup{fs, heading}
}

// flagGroup defines flags like flag.FlagSet does, in one group of --help.
type flagGroup struct {
	fs      *flagSet
	heading string
}

func (g flagGroup) tag(name string) {
	m := g.fs.metaOf(name)
	m.group = g.heading
	m.order = len(g.fs.meta)
}

func (g flagGroup) String(name, value, usage string) *string {
	defer g.tag(name)
	return g.fs.FlagSet.String(name, value, usage)
}

func (g flagGroup) StringVar(p *string, name, value, usage string) {
	defer g.tag(name)
	g.fs.FlagSet.StringVar(p, name, value, usage)
}

func (g flagGroup) Int(name string, value int, usage string) *int {
	defer g.tag(name)
	return g.fs.FlagSet.Int(name, value, usage)
}

func (g flagGroup) IntVar(p *int, name string, value int, usage string) {
	defer g.tag(name)
	g.fs.FlagSet.IntVar(p, name, value, usage)
}

func (g flagGroup) Int64(name string, value int64, usage string) *int64 {
	defer g.tag(name)
	return g.fs.FlagSet.Int64(name, value, usage)
}

func (g flagGroup) Bool(name string, value bool, usage string) *bool {
	defer g.tag(name)
	return g.fs.FlagSet.Bool(name, value, usage)
}

func (g flagGroup) Duration(name string, value time.Duration, usage string) *time.Duration {
	defer g.tag(name)
	return g.fs.FlagSet.Duration(name, value, usage)
}

func (g flagGroup) DurationVar(p *time.Duration, name string, value time.Duration, usage string) {
	defer g.tag(name)
	g.fs.FlagSet.DurationVar(p, name, value, usage)
}

func (g flagGroup) Var(value flag.Value, name, usage string) {
	defer g.tag(name)
	g.fs.FlagSet.Var(value, name, usage)
}

func (g flagGroup) TextVar(p interface {
	MarshalText() ([]byte, error)
	UnmarshalText([]byte) error
}, name string, value interface{ MarshalText() ([]byte, error) }, usage string) {
	defer g.tag(name)
	g.fs.FlagSet.TextVar(p, name, value, usage)
}

// parse parses args, then fills every flag not given on the command line
// from its environment variable. Errors come back as one line that names
// the flag or variable and, when it can, the fix.
func (fs *flagSet) parse(args []string) error {
	fs.VisitAll(func(f *flag.Flag) { f.Value = fs.checked(f) })
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.printUsage()
			return err
		}
		return fs.parseError(err)
	}
	if fs.NArg() > 0 {
		return fs.unexpected(args)
	}
	fs.fromArgs = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { fs.fromArgs[f.Name] = true })
	hidden := map[string]bool{}
	for _, group := range fs.oneOfs {
		if slices.ContainsFunc(group, func(n string) bool { return fs.fromArgs[n] }) {
			for _, n := range group {
				hidden[n] = true
			}
		}
	}
	fs.fromEnv = map[string]string{}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		v := fs.envOf(f.Name)
		if err != nil || v == "" || fs.fromArgs[f.Name] || hidden[f.Name] {
			return
		}
		val, ok := os.LookupEnv(v)
		if !ok {
			return
		}
		values := []string{val}
		if _, list := unwrap(f.Value).(*listFlag); list {
			values = strings.Split(val, ",")
		}
		for _, one := range values {
			if e := f.Value.Set(strings.TrimSpace(one)); e != nil {
				var ve *valueError
				if !errors.As(e, &ve) {
					ve = &valueError{value: one, why: e.Error()}
				}
				err = ve.withSource(v)
				return
			}
		}
		fs.fromEnv[f.Name] = v
	})
	if err != nil {
		return err
	}
	for _, group := range fs.oneOfs {
		var set []string
		for _, n := range group {
			if fs.given(n) {
				set = append(set, fs.source(n))
			}
		}
		if len(set) > 1 {
			return fmt.Errorf("give %s, not both", strings.Join(set, " or "))
		}
	}
	return nil
}

// given reports whether a flag was set, on the command line or by its
// environment variable.
func (fs *flagSet) given(name string) bool {
	_, env := fs.fromEnv[name]
	return fs.fromArgs[name] || env
}

// source names where a flag's value came from, for messages: --name, or
// its environment variable.
func (fs *flagSet) source(name string) string {
	if v, ok := fs.fromEnv[name]; ok {
		return v
	}
	return "--" + name
}

// parseError turns the flag package's errors into one line with a hint.
func (fs *flagSet) parseError(err error) error {
	if fs.failed != nil {
		return fs.failed
	}
	msg := err.Error()
	help := fmt.Sprintf("see 'ssehub %s --help'", fs.cmd)
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return fs.unknownFlag(name)
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: -"); ok {
		return fmt.Errorf("--%s needs a value, as in --%s %s; %s", name, name, fs.example(name), help)
	}
	if s, ok := strings.CutPrefix(msg, "bad flag syntax: "); ok {
		return fmt.Errorf("bad flag syntax %q: write --name value or --name=value; %s", s, help)
	}
	return fmt.Errorf("%v; %s", err, help)
}

// unknownFlag says which flags the user may have meant.
func (fs *flagSet) unknownFlag(name string) error {
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	msg := fmt.Sprintf("unknown flag --%s", name)
	if near := closest(name, names); len(near) > 0 {
		msg += "; did you mean " + joinOr(prefixAll("--", near)) + "?"
	} else if others := commandsWithFlag(name, fs.cmd); len(others) > 0 {
		msg += fmt.Sprintf(" for %s; it is a flag of %s", fs.cmd, joinOr(others))
	}
	return fmt.Errorf("%s (see 'ssehub %s --help')", msg, fs.cmd)
}

// unexpected explains a word that is not a flag, most often the value of
// a boolean flag given without '='.
func (fs *flagSet) unexpected(args []string) error {
	arg := fs.Arg(0)
	i := len(args) - fs.NArg()
	if i > 0 {
		prev := strings.TrimLeft(args[i-1], "-")
		if f := fs.Lookup(prev); f != nil && isBool(f) {
			if _, err := strconv.ParseBool(arg); err == nil {
				return fmt.Errorf("unexpected argument %q: a boolean flag takes its value after '=', as in --%s=%s", arg, prev, arg)
			}
		}
	}
	return fmt.Errorf("unexpected argument %q: ssehub %s takes flags only (see 'ssehub %s --help')", arg, fs.cmd, fs.cmd)
}

// valueError is a value a flag or an environment variable refused.
type valueError struct {
	source string // --name or SSEHUB_NAME
	value  string
	why    string
}

func (e *valueError) Error() string {
	return fmt.Sprintf("%s: %q %s", e.source, e.value, e.why)
}

func (e *valueError) withSource(s string) *valueError {
	c := *e
	c.source = s
	return &c
}

// checkedValue wraps a flag's Value to explain a refused value in words
// that name the expected form.
type checkedValue struct {
	flag.Value
	fs   *flagSet
	name string
}

// checkedBool is a checkedValue for a boolean flag, which the flag package
// recognises by its IsBoolFlag method.
type checkedBool struct{ *checkedValue }

func (c checkedBool) IsBoolFlag() bool { return true }

func (fs *flagSet) checked(f *flag.Flag) flag.Value {
	if _, done := f.Value.(*checkedValue); done {
		return f.Value
	}
	if _, done := f.Value.(checkedBool); done {
		return f.Value
	}
	c := &checkedValue{Value: f.Value, fs: fs, name: f.Name}
	if isBool(f) {
		return checkedBool{c}
	}
	return c
}

func unwrap(v flag.Value) flag.Value {
	switch c := v.(type) {
	case *checkedValue:
		return c.Value
	case checkedBool:
		return c.Value
	}
	return v
}

func isBool(f *flag.Flag) bool {
	b, ok := unwrap(f.Value).(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

func (c *checkedValue) Get() any {
	if g, ok := c.Value.(flag.Getter); ok {
		return g.Get()
	}
	return c.Value.String()
}

func (c *checkedValue) Set(s string) error {
	// "--addr --broker x" would take "--broker" as the address.
	if name, ok := strings.CutPrefix(s, "--"); ok && c.fs.Lookup(strings.SplitN(name, "=", 2)[0]) != nil {
		return c.fail(s, fmt.Sprintf("is a flag, not a value: --%s needs a value first", c.name))
	}
	err := c.Value.Set(s)
	if err == nil {
		return nil
	}
	return c.fail(s, explain(c.Get(), s, err))
}

func (c *checkedValue) fail(s, why string) error {
	e := &valueError{source: "--" + c.name, value: s, why: why}
	if c.fs.failed == nil || c.fs.failed.source != e.source || c.fs.failed.value != s {
		c.fs.failed = e
	}
	return e
}

// explain says what form a value of v's type takes.
func explain(v any, s string, err error) string {
	switch v.(type) {
	case time.Duration:
		if n, e := strconv.ParseFloat(s, 64); e == nil {
			unit := "s"
			if n >= 100 {
				unit = "ms"
			}
			return fmt.Sprintf("is not a duration: give it a unit, as in %s%s (units: ms, s, m, h)", s, unit)
		}
		return "is not a duration: write one like 15s, 500ms or 1h30m"
	case int, int64, uint, uint64:
		return "is not a whole number"
	case float64:
		return "is not a number"
	case bool:
		return "is not true or false"
	case slog.Level, *slog.Level:
		return "is not a log level: use debug, info, warn or error"
	}
	return err.Error()
}

// example returns a value to show in a message about a flag: its default,
// or the word --help shows for its value.
func (fs *flagSet) example(name string) string {
	f := fs.Lookup(name)
	if f == nil {
		return "VALUE"
	}
	if d := defaultText(f); d != "" && !isBool(f) {
		return d
	}
	if p, _ := unquoteUsage(f); p != "" {
		return strings.ToUpper(p)
	}
	return "VALUE"
}

// unquoteUsage returns a flag's value placeholder and its usage without
// the back quotes that name it, as flag.UnquoteUsage does for unwrapped
// values.
func unquoteUsage(f *flag.Flag) (name, usage string) {
	usage = f.Usage
	if i := strings.Index(usage, "`"); i >= 0 {
		if j := strings.Index(usage[i+1:], "`"); j >= 0 {
			name = usage[i+1 : i+1+j]
			return name, usage[:i] + name + usage[i+1+j+1:]
		}
	}
	if isBool(f) {
		return "", usage
	}
	switch (&checkedValue{Value: unwrap(f.Value)}).Get().(type) {
	case time.Duration:
		return "duration", usage
	case int, int64:
		return "int", usage
	case float64:
		return "float", usage
	case string:
		return "string", usage
	}
	return "value", usage
}

// defaultText returns a flag's default as a user would type it, or "" when
// --help should not show one.
func defaultText(f *flag.Flag) string {
	d := f.DefValue
	switch (&checkedValue{Value: unwrap(f.Value)}).Get().(type) {
	case time.Duration:
		if dv, err := time.ParseDuration(d); err == nil && dv != 0 {
			return formatDuration(dv)
		}
	case slog.Level, *slog.Level:
		return strings.ToLower(d)
	case bool:
		if d == "true" {
			return fmt.Sprintf("true; --%s=false turns it off", f.Name)
		}
		return ""
	}
	if d == "0" || d == "0s" {
		return "" // the usage says what zero means
	}
	return d
}

// formatDuration writes d as a user would: 1h rather than 1h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (fs *flagSet) printUsage() {
	w := fs.out
	fmt.Fprintf(w, "Usage: ssehub %s\n", fs.synopsis)
	if fs.about != "" {
		fmt.Fprintf(w, "\n%s\n", wrap(fs.about, 0))
	}
	if len(fs.examples) > 0 {
		fmt.Fprintln(w, "\nExamples:")
		for _, e := range fs.examples {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
	byGroup := map[string][]*flag.Flag{}
	anyEnv, anyBool := false, false
	fs.VisitAll(func(f *flag.Flag) {
		g := ""
		if m := fs.meta[f.Name]; m != nil {
			g = m.group
		}
		byGroup[g] = append(byGroup[g], f)
		anyEnv = anyEnv || fs.envOf(f.Name) != ""
		anyBool = anyBool || isBool(f)
	})
	headings := fs.groups
	if len(byGroup[""]) > 0 {
		if len(headings) > 0 {
			headings = append(slices.Clip(headings), "Other flags")
			byGroup["Other flags"] = byGroup[""]
		} else {
			headings = []string{"Flags"}
			byGroup["Flags"] = byGroup[""]
		}
	}
	for _, h := range headings {
		if len(byGroup[h]) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s:\n", h)
		// Grouped flags in the order they are defined, the most used first.
		slices.SortStableFunc(byGroup[h], func(a, b *flag.Flag) int { return fs.metaOf(a.Name).order - fs.metaOf(b.Name).order })
		for _, f := range byGroup[h] {
			fs.printFlag(w, f)
		}
	}
	if anyEnv {
		fmt.Fprintf(w, "\nA flag shown with [$SSEHUB_NAME] can also be set with that environment variable;\n"+
			"the command line wins over it.\n")
	}
	if anyBool {
		fmt.Fprintf(w, "A boolean flag alone turns its setting on; --name=false turns it off.\n")
	}
}

func (fs *flagSet) printFlag(w io.Writer, f *flag.Flag) {
	name, usage := unquoteUsage(f)
	line := "  --" + f.Name
	if name != "" {
		line += " " + name
	}
	if d := defaultText(f); d != "" {
		usage += " (default " + d + ")"
	}
	if v := fs.envOf(f.Name); v != "" {
		usage += " [$" + v + "]"
	}
	fmt.Fprintf(w, "%s\n%s\n", line, wrap(usage, 8))
}

// wrap breaks s into lines of at most 80 columns, each indented by indent
// spaces.
func wrap(s string, indent int) string {
	const width = 80
	pad := strings.Repeat(" ", indent)
	var b strings.Builder
	col := 0
	for i, word := range strings.Fields(s) {
		if i > 0 && col+1+len(word) > width {
			b.WriteString("\n")
			col = 0
		}
		if col == 0 {
			b.WriteString(pad)
			col = indent
		} else {
			b.WriteString(" ")
			col++
		}
		b.WriteString(word)
		col += len(word)
	}
	return b.String()
}

// listFlag is a flag that may be given more than once.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

// flagCatalog collects the flag sets of commands that run with --help and
// it as their output: how ssehub learns every command's flags without
// running one.
type flagCatalog struct{ sets []*flagSet }

func (c *flagCatalog) Write(p []byte) (int, error) { return len(p), nil }

// catalog returns the flag set of every command. It runs each with --help,
// so a command must define and parse its flags before it does anything
// else.
func catalog() []*flagSet {
	c := &flagCatalog{}
	for _, cmd := range commands() {
		cmd.run(context.Background(), []string{"--help"}, nil, c, io.Discard)
	}
	return c.sets
}

// commandsWithFlag returns the commands other than except that have the
// flag name.
func commandsWithFlag(name, except string) []string {
	var out []string
	for _, fs := range catalog() {
		if fs.cmd != except && fs.Lookup(name) != nil {
			out = append(out, fs.cmd)
		}
	}
	return out
}

// checkEnvironment warns about SSEHUB_* variables that no command reads,
// most often misspelt.
func checkEnvironment(w io.Writer) {
	var set []string
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "SSEHUB_") {
			set = append(set, name)
		}
	}
	if len(set) == 0 {
		return
	}
	known := map[string]bool{}
	for _, fs := range catalog() {
		fs.VisitAll(func(f *flag.Flag) {
			if v := fs.envOf(f.Name); v != "" {
				known[v] = true
			}
		})
	}
	names := make([]string, 0, len(known))
	for v := range known {
		names = append(names, strings.TrimPrefix(v, "SSEHUB_"))
	}
	slices.Sort(names)
	slices.Sort(set)
	for _, v := range set {
		if known[v] {
			continue
		}
		msg := fmt.Sprintf("ssehub: warning: no command reads %s", v)
		if hint, ok := retiredEnv[v]; ok {
			msg += "; " + hint
		} else if near := closest(strings.TrimPrefix(v, "SSEHUB_"), names); len(near) > 0 {
			msg += "; did you mean " + joinOr(prefixAll("SSEHUB_", near)) + "?"
		}
		fmt.Fprintln(w, msg)
	}
}

// retiredEnv explains variables that earlier versions read.
var retiredEnv = map[string]string{
	"SSEHUB_TOKEN": "publish sends SSEHUB_PUBLISH_TOKEN (or the file in SSEHUB_PUBLISH_TOKEN_FILE), the token serve accepts; give any other token with --token",
}

// closest returns the candidates within a few edits of s, or starting with
// it, nearest first.
func closest(s string, candidates []string) []string {
	type scored struct {
		name string
		d    int
	}
	var found []scored
	limit := max(1, len(s)/3)
	for _, c := range candidates {
		d := editDistance(s, c)
		if d <= limit || (len(s) >= 3 && strings.HasPrefix(c, s)) {
			found = append(found, scored{c, d})
		}
	}
	slices.SortStableFunc(found, func(a, b scored) int { return a.d - b.d })
	var out []string
	for _, f := range found {
		// The nearest, and what the input begins, but not a farther one
		// beside a near one.
		if len(out) == 3 || (f.d > found[0].d && !strings.HasPrefix(f.name, s)) {
			continue
		}
		out = append(out, f.name)
	}
	return out
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func prefixAll(p string, s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = p + v
	}
	return out
}

// joinOr writes a, b or c.
func joinOr(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
