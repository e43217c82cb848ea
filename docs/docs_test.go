package docs_test

// TestDocs runs every command shown in README.md and docs/*.md, so that the
// documentation cannot drift from the program; a new page in docs/ is run
// without further ado. How a page is run, for whoever writes one:
//
// # Blocks
//
//   - A fenced block tagged sh, bash or shell holds commands. They run in
//     page order in one bash session per page, from the root of a copy of
//     the repository (a variable set in one block holds in the blocks below
//     it). Each must exit 0.
//   - A block tagged console shows commands with their output: a line
//     starting with "$ " is a command, and the lines below it, up to the
//     next "$ ", are what it prints, stdout and stderr together, compared
//     exactly; a line "..." stands for any number of lines. The output is
//     checked, not the exit status.
//   - Any other block (no tag, text, json, js, nginx, ...) is output, code or
//     configuration and does not run. A go block that begins with
//     "package main" is a whole program: it is compiled.
//
// # What the test provides
//
//   - ssehub on PATH, built from this tree, as after `go install
//     ./cmd/ssehub`; GOBIN is the same directory, so that command works too.
//     Files the commands write go into the copy. SSEHUB_* variables of the
//     environment the test runs in are left out.
//   - Addresses: every port that the page's commands name gets a free one,
//     the same throughout the page (127.0.0.1:8080 becomes 127.0.0.1:24817
//     in every block), and 0.0.0.0 or a bare :port become 127.0.0.1, so
//     nothing listens beyond loopback. SSEHUB_ADDR and SSEHUB_URL point the
//     commands' default address, 127.0.0.1:8080, at its port, and
//     examples/webpage's 127.0.0.1:5000 has one too. A console block's
//     output is compared with the page's own ports put back.
//   - Services: a page whose commands mention redis:// or port 6379 gets a
//     private redis-server (internal/redistest) on the port they name. To
//     provide another service, add it to services. A page may also start
//     its own servers (nats-server ... &): name their ports, so that they
//     are changed with the others (-p and --*port flags are), and keep their
//     files in the working directory, not in /tmp. Without the program the
//     page is skipped, or fails under CI=true.
//   - Commands that run until stopped run in the background: a line ending
//     in &, a server (see servers: ssehub serve, go run ./examples/webpage,
//     nats-server) and a stream reader (see readers: curl -N, ssehub
//     subscribe without --count). The next command waits until a server
//     accepts connections.
//     A server started on the address of another replaces it, as the reader
//     would have stopped the first; everything stops at the end of the page.
//     Their output goes to logs shown when the page fails.
//
// # Directives
//
// An HTML comment on the line right above a fence, which GitHub does not
// show, changes how the block runs; stack several, one per line.
//
//	<!-- doc-test: skip REASON -->      do not run the block; REASON says why
//	                                    (needs Docker, installs a system
//	                                    service, runs for minutes, ...)
//	<!-- doc-test: hub FLAGS -->        start `ssehub serve FLAGS` first, as
//	                                    the reader has in another terminal
//	<!-- doc-test: replace OLD NEW -->  run the block with OLD replaced by
//	                                    NEW, e.g. to shrink a load test;
//	                                    quote OLD or NEW as in Go when it
//	                                    holds spaces ("--events 20000")
//
// Heredocs and commands that read the terminal are not supported. To see
// what a page ran: go test -v -run 'TestDocs/docs/redis.md' ./docs
// (README.md is TestDocs/README.md).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ssehub/ssehub/internal/redistest"
)

// servers are the commands that listen until stopped: what they look
// like, the program they need installed ("" for one this repository
// builds), and where they listen, read from the command after its ports
// were changed, with the address they listen on when it names none.
var servers = []struct {
	re          *regexp.Regexp
	binary      string
	addr        func(cmd string) string
	defaultAddr string
}{
	{regexp.MustCompile(`\bssehub\s+serve\b`), "", flagAddr, "127.0.0.1:8080"},
	{regexp.MustCompile(`\bgo\s+run\s+\./examples/webpage\b`), "", flagAddr, "127.0.0.1:5000"},
	{regexp.MustCompile(`(^|[\s;&|])nats-server\s`), "nats-server", natsAddr, "127.0.0.1:4222"},
}

// flagAddr reads --addr, or SSEHUB_ADDR set on the command line.
func flagAddr(cmd string) string {
	if m := regexp.MustCompile(`--addr[= ]+['"]?([^\s'"]+)`).FindStringSubmatch(cmd); m != nil {
		return m[1]
	}
	if m := regexp.MustCompile(`\bSSEHUB_ADDR=['"]?([^\s'"]+)`).FindStringSubmatch(cmd); m != nil {
		return m[1]
	}
	return ""
}

// natsAddr reads nats-server's -a (--addr, --net) and -p (--port).
func natsAddr(cmd string) string {
	host, port := "127.0.0.1", ""
	if m := regexp.MustCompile(`\s(?:-a|--addr|--net)[= ]+(\S+)`).FindStringSubmatch(cmd); m != nil {
		host = m[1]
	}
	if m := regexp.MustCompile(`\s(?:-p|--port)[= ]+(\d+)`).FindStringSubmatch(cmd); m != nil {
		port = m[1]
	}
	if port == "" {
		return ""
	}
	return net.JoinHostPort(host, port)
}

// readers are the commands that read a stream until stopped.
var readers = []func(cmd string) bool{
	func(cmd string) bool { return regexp.MustCompile(`\bcurl\b.*\s-N\b`).MatchString(cmd) },
	func(cmd string) bool {
		return regexp.MustCompile(`\bssehub\s+subscribe\b`).MatchString(cmd) && !strings.Contains(cmd, "--count")
	},
}

// services are what a page's commands may need running: each is started
// when a runnable block of the page matches, and stands for the port the
// page names. start returns the port it listens on; without the server's
// binary it skips the page, or fails it under CI=true, as redistest does.
var services = []struct {
	name  string
	match *regexp.Regexp
	port  int // the port the docs name
	start func(t *testing.T) int
}{
	{"redis", regexp.MustCompile(`redis://|:6379\b`), 6379, func(t *testing.T) int { return redistest.Start(t).Port() }},
}

// defaultPorts get a free port on every page, for the defaults of the
// commands, which the page does not write.
var defaultPorts = []int{8080, 5000}

// Bounds of waiting for one command, and for a server to listen or stop.
const (
	commandTimeout = 5 * time.Minute
	listenTimeout  = 3 * time.Minute
	stopTimeout    = 30 * time.Second
)

func TestDocs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the doc test runs the pages' shell commands on Linux")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	pages = append([]string{filepath.Join(root, "README.md")}, pages...)
	bin := buildSSEHub(t, root)
	for _, page := range pages {
		rel, _ := filepath.Rel(root, page)
		t.Run(rel, func(t *testing.T) {
			t.Parallel()
			text, err := os.ReadFile(page)
			if err != nil {
				t.Fatal(err)
			}
			blocks, err := parseBlocks(string(text))
			if err != nil {
				t.Fatalf("%s: %v", rel, err)
			}
			runPage(t, root, bin, rel, blocks)
		})
	}
}

// buildSSEHub builds cmd/ssehub into a directory of its own.
func buildSSEHub(t *testing.T, root string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "ssehub"), "./cmd/ssehub")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building ssehub: %v\n%s", err, out)
	}
	return filepath.Join(dir, "ssehub")
}

// block is one fenced block of a page.
type block struct {
	lang       string
	text       string
	line       int // of the opening fence, from 1
	skip       string
	hub        []string // flags of a hub to start first; nil for none
	hubWanted  bool
	replaces   [][2]string
	directives int
}

func (b block) runs() bool {
	switch b.lang {
	case "sh", "bash", "shell", "console":
		return b.skip == ""
	}
	return false
}

var (
	fenceRE     = regexp.MustCompile("^( {0,3})(```+|~~~+)\\s*([^\\s`]*)")
	directiveRE = regexp.MustCompile(`^\s*<!--\s*doc-test:\s*(.*?)\s*-->\s*$`)
)

// parseBlocks returns the fenced blocks of a Markdown page, with the
// directives above each.
func parseBlocks(page string) ([]block, error) {
	lines := strings.Split(page, "\n")
	var (
		blocks  []block
		pending []string // directives seen right above the current line
		pendAt  int
	)
	for i := 0; i < len(lines); i++ {
		if m := directiveRE.FindStringSubmatch(lines[i]); m != nil {
			pending = append(pending, m[1])
			pendAt = i + 1
			continue
		}
		m := fenceRE.FindStringSubmatch(lines[i])
		if m == nil {
			if len(pending) > 0 {
				return nil, fmt.Errorf("line %d: a doc-test directive must be right above a fence", pendAt)
			}
			continue
		}
		b := block{lang: strings.ToLower(m[3]), line: i + 1}
		for _, d := range pending {
			if err := b.apply(d); err != nil {
				return nil, fmt.Errorf("line %d: %v", b.line-1, err)
			}
		}
		pending = nil
		var body []string
		closed := false
		for i++; i < len(lines); i++ {
			if c := fenceRE.FindStringSubmatch(lines[i]); c != nil && strings.HasPrefix(c[2], m[2][:1]) && len(c[2]) >= len(m[2]) && c[3] == "" {
				closed = true
				break
			}
			body = append(body, lines[i])
		}
		if !closed {
			return nil, fmt.Errorf("line %d: unclosed fence", b.line)
		}
		b.text = strings.Join(body, "\n")
		blocks = append(blocks, b)
	}
	return blocks, nil
}

// apply reads one directive into b.
func (b *block) apply(d string) error {
	verb, rest, _ := strings.Cut(d, " ")
	rest = strings.TrimSpace(rest)
	b.directives++
	switch verb {
	case "skip":
		if rest == "" {
			return errors.New("doc-test: skip needs a reason")
		}
		b.skip = rest
	case "hub":
		b.hubWanted = true
		b.hub = strings.Fields(rest)
	case "replace":
		args, err := words(rest)
		if err != nil || len(args) != 2 {
			return fmt.Errorf("doc-test: replace takes OLD NEW, got %q", rest)
		}
		b.replaces = append(b.replaces, [2]string{args[0], args[1]})
	default:
		return fmt.Errorf("unknown doc-test directive %q (skip, hub or replace)", verb)
	}
	return nil
}

// words splits s into words, each bare or quoted as in Go.
func words(s string) ([]string, error) {
	var out []string
	for s = strings.TrimSpace(s); s != ""; s = strings.TrimSpace(s) {
		if s[0] == '"' || s[0] == '`' {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				return nil, err
			}
			w, _ := strconv.Unquote(q)
			out = append(out, w)
			s = s[len(q):]
			continue
		}
		w, rest, _ := strings.Cut(s, " ")
		out = append(out, w)
		s = rest
	}
	return out, nil
}

// text returns the block's text with its replacements made.
func (b block) replaced() string {
	s := b.text
	for _, r := range b.replaces {
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	return s
}

// commands splits a shell block into its commands: lines joined where one
// ends with a backslash, without blank lines and comments.
func commands(text string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if cur.Len() == 0 && (strings.TrimSpace(line) == "" || strings.HasPrefix(strings.TrimSpace(line), "#")) {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(line, "\\") {
			cur.WriteString("\n")
			continue
		}
		out = append(out, cur.String())
		cur.Reset()
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// stripComment removes a trailing shell comment from cmd: a # after a blank,
// outside quotes.
func stripComment(cmd string) string {
	var quote byte
	for i := 0; i < len(cmd); i++ {
		c := cmd[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' {
				i++
			}
		case c == '\\':
			i++
		case c == '\'' || c == '"':
			quote = c
		case c == '#' && (i == 0 || cmd[i-1] == ' ' || cmd[i-1] == '\t'):
			return strings.TrimRight(cmd[:i], " \t")
		}
	}
	return cmd
}

// portMap gives the ports a page names free ones.
type portMap struct {
	to   map[int]int // page port → port used
	back map[int]int
}

var (
	portRE     = regexp.MustCompile(`(?:\b(127\.0\.0\.1|localhost|0\.0\.0\.0)|(^|[\s='"]))(:)(\d{4,5})\b`)
	portFlagRE = regexp.MustCompile(`(\s(?:-p|--?[a-z_-]*port)[= ]+)(\d{4,5})\b`)
)

func (p *portMap) add(page, used int) {
	p.to[page] = used
	p.back[used] = page
}

// remap rewrites the ports of s, and 0.0.0.0 or a bare :port to 127.0.0.1.
func (p *portMap) remap(s string) string {
	s = portFlagRE.ReplaceAllStringFunc(s, func(m string) string {
		sm := portFlagRE.FindStringSubmatch(m)
		n, _ := strconv.Atoi(sm[2])
		if to, ok := p.to[n]; ok {
			return sm[1] + strconv.Itoa(to)
		}
		return m
	})
	return portRE.ReplaceAllStringFunc(s, func(m string) string {
		sm := portRE.FindStringSubmatch(m)
		n, _ := strconv.Atoi(sm[4])
		to, ok := p.to[n]
		if !ok {
			return m
		}
		host := sm[1]
		if host == "" || host == "0.0.0.0" {
			host = "127.0.0.1"
		}
		return sm[2] + host + ":" + strconv.Itoa(to)
	})
}

// unmap puts the page's own ports back into s.
func (p *portMap) unmap(s string) string {
	return regexp.MustCompile(`:(\d{4,5})\b`).ReplaceAllStringFunc(s, func(m string) string {
		n, _ := strconv.Atoi(m[1:])
		if page, ok := p.back[n]; ok {
			return ":" + strconv.Itoa(page)
		}
		return m
	})
}

// Ports handed out by freePort, so that no two pages get the same one.
var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// freePort returns a loopback port nothing listens on, below the
// ephemeral range: a port from that range may be taken by any outgoing
// connection, or by another test's listener on port 0, before the page's
// server binds it.
func freePort(t *testing.T) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			low, _ = strconv.Atoi(f[0])
		}
	}
	const from = 20000 // above the ports services and scripts use (6379, 18080)
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := from + rand.IntN(max(low-from, 1))
		if portsGiven[p] {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		ln.Close()
		portsGiven[p] = true
		return p
	}
	t.Fatal("no free port")
	return 0
}

// freePorts returns the first of n consecutive ports that are free and
// given to no other page, as freePort chooses them.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for range 100 {
		base := freePort(t)
		portsMu.Lock()
		ok := true
		for p := base + 1; p < base+n && ok; p++ {
			ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
			if ok = err == nil && !portsGiven[p]; err == nil {
				ln.Close()
			}
		}
		if ok {
			for p := base + 1; p < base+n; p++ {
				portsGiven[p] = true
			}
		}
		portsMu.Unlock()
		if ok {
			return base
		}
	}
	t.Fatalf("no %d free ports in a row", n)
	return 0
}

// runPage runs the runnable blocks of one page.
func runPage(t *testing.T, root, bin, rel string, blocks []block) {
	var runnable []block
	for _, b := range blocks {
		if b.skip != "" {
			t.Logf("%s:%d: not run: %s", rel, b.line, b.skip)
		}
		if b.runs() {
			runnable = append(runnable, b)
		}
	}
	if len(runnable) == 0 && !slices.ContainsFunc(blocks, isProgram) {
		return
	}

	ports := &portMap{to: map[int]int{}, back: map[int]int{}}
	var all strings.Builder
	for _, b := range runnable {
		all.WriteString(b.replaced() + "\n" + strings.Join(b.hub, " ") + "\n")
	}
	for _, s := range services {
		if s.match.MatchString(all.String()) {
			ports.add(s.port, s.start(t))
		}
	}
	var named []int
	for _, m := range portRE.FindAllStringSubmatch(all.String(), -1) {
		n, _ := strconv.Atoi(m[4])
		named = append(named, n)
	}
	for _, m := range portFlagRE.FindAllStringSubmatch(all.String(), -1) {
		n, _ := strconv.Atoi(m[2])
		named = append(named, n)
	}
	for _, n := range named {
		if _, ok := ports.to[n]; !ok && n >= 1024 {
			ports.add(n, freePort(t))
		}
	}
	for _, srv := range servers {
		if srv.binary != "" && srv.re.MatchString(all.String()) {
			if _, err := exec.LookPath(srv.binary); err != nil {
				msg := srv.binary + " is not installed; the page runs it"
				if os.Getenv("CI") == "true" {
					t.Fatal(msg)
				}
				t.Skip(msg)
			}
		}
	}
	for _, n := range defaultPorts {
		if _, ok := ports.to[n]; !ok {
			ports.add(n, freePort(t))
		}
	}

	work := copyRepo(t, root)
	binDir := filepath.Join(t.TempDir(), "bin")
	if err := os.Mkdir(binDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(bin, filepath.Join(binDir, "ssehub")); err != nil {
		copyFile(t, bin, filepath.Join(binDir, "ssehub"), 0o755)
	}
	hubAddr := ports.remap("127.0.0.1:8080")
	env := []string{
		"PATH=" + binDir + string(os.PathListSeparator) + os.Getenv("PATH"),
		"GOBIN=" + binDir,
		"SSEHUB_ADDR=" + hubAddr,
		"SSEHUB_URL=http://" + hubAddr,
		// scripts/bench-scenarios puts its hubs and servers on PORT and
		// the 60 ports after it.
		"PORT=" + strconv.Itoa(freePorts(t, 60)),
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "SSEHUB_") && name != "PATH" && name != "GOBIN" && name != "PORT" {
			env = append(env, kv)
		}
	}
	s := startSession(t, work, env)
	defer s.stop(t)

	for _, b := range blocks {
		where := fmt.Sprintf("%s:%d", rel, b.line)
		if isProgram(b) {
			compileProgram(t, root, where, b.text)
			fmt.Fprintf(s.out, "# %s: compiled the Go program\n", where)
			continue
		}
		if !b.runs() {
			continue
		}
		if b.hubWanted {
			s.run(t, where, ports.remap(strings.Join(append([]string{"ssehub", "serve"}, b.hub...), " ")), ports)
		}
		if b.lang == "console" {
			s.console(t, where, ports.remap(b.replaced()), ports)
			continue
		}
		for _, cmd := range commands(ports.remap(b.replaced())) {
			s.run(t, where, cmd, ports)
		}
	}
}

func isProgram(b block) bool {
	return b.lang == "go" && strings.HasPrefix(strings.TrimSpace(b.text), "package main")
}

// compileProgram builds a page's Go program against this module, as if
// it were a package of it, without writing into the tree.
func compileProgram(t *testing.T, root, where, src string) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "main.go")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join("docs", "doctestprograms", fmt.Sprintf("p%d", time.Now().UnixNano()))
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(root, pkg, "main.go"): file}})
	overlayFile := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(overlayFile, overlay, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-overlay", overlayFile, "-o", os.DevNull, "./"+pkg)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: the Go program does not build: %v\n%s", where, err, strings.ReplaceAll(string(out), filepath.Join(root, pkg), where))
	}
}

// copyRepo copies the repository's tracked files (all files, without git)
// into a temporary directory, where the page's commands may write.
func copyRepo(t *testing.T, root string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "repo")
	var files []string
	ls := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	ls.Dir = root
	if out, err := ls.Output(); err == nil {
		for _, f := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
			if f != "" {
				files = append(files, f)
			}
		}
	} else {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && d.Name() == ".git" {
				return filepath.SkipDir
			}
			if !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				files = append(files, rel)
			}
			return nil
		})
	}
	for _, f := range files {
		st, err := os.Lstat(filepath.Join(root, f))
		if err != nil || !st.Mode().IsRegular() {
			continue // deleted, or a link
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		copyFile(t, filepath.Join(root, f), filepath.Join(dst, f), st.Mode().Perm())
	}
	return dst
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// session is one bash process that runs a page's commands one at a time.
type session struct {
	cmd    *exec.Cmd
	script io.WriteCloser
	status *bufio.Reader
	dir    string // for output files
	out    *lockedBuffer
	exited chan struct{}
	n      int

	jobs []*job
}

// job is a command running in the background, in a process group of its
// own.
type job struct {
	pid   int
	cmd   string
	where string
	log   string
	addr  string // where it listens, for a server
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func startSession(t *testing.T, dir string, env []string) *session {
	t.Helper()
	statusR, statusW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &session{dir: t.TempDir(), out: &lockedBuffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command("bash", "--noprofile", "--norc")
	s.cmd.Dir = dir
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.ExtraFiles = []*os.File{statusW} // fd 3
	// A session of its own, so that whatever the commands start can be
	// found and stopped.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if s.script, err = s.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	statusW.Close()
	s.status = bufio.NewReader(statusR)
	go func() {
		s.cmd.Wait()
		statusR.Close()
		close(s.exited)
	}()
	// Job control gives each background job a process group, which can
	// be stopped with whatever it started (go run and its program). When
	// the test dies, its end of the script pipe closes and the shell stops
	// its jobs on the way out.
	fmt.Fprintln(s.script, `set -m; set -o pipefail; trap 'for p in $(jobs -p); do kill -TERM -- -$p; done 2>/dev/null' EXIT`)
	return s
}

// send writes shell code to the session and returns the line it then
// reports on fd 3.
func (s *session) send(t *testing.T, where, code string) string {
	t.Helper()
	if _, err := io.WriteString(s.script, code); err != nil {
		t.Fatalf("%s: the shell is gone: %v\n%s", where, err, s.out)
	}
	line := make(chan string, 1)
	go func() {
		l, _ := s.status.ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	select {
	case l := <-line:
		if l == "" {
			t.Fatalf("%s: the shell exited; its output:\n%s", where, s.out)
		}
		return l
	case <-time.After(commandTimeout):
		t.Fatalf("%s: no end after %v; a command that runs until stopped must match servers or readers, or end in &\n%s", where, commandTimeout, s.out)
	}
	return ""
}

// run runs one command of a sh block.
func (s *session) run(t *testing.T, where, cmd string, ports *portMap) {
	t.Helper()
	line := stripComment(cmd)
	background := strings.HasSuffix(line, "&") && !strings.HasSuffix(line, "&&")
	line = strings.TrimSuffix(line, "&")
	addr := ""
	for _, srv := range servers {
		if srv.re.MatchString(line) {
			background = true
			if addr = srv.addr(line); addr == "" {
				addr = ports.remap(srv.defaultAddr)
			}
			addr = dialable(addr)
		}
	}
	for _, r := range readers {
		background = background || r(line)
	}
	s.n++
	if !background {
		out := filepath.Join(s.dir, fmt.Sprintf("out-%d", s.n))
		code := s.send(t, where, fmt.Sprintf("{ %s\n} </dev/null 3>&- >%q 2>&1; echo $? >&3\n", cmd, out))
		b, _ := os.ReadFile(out)
		fmt.Fprintf(s.out, "$ %s\n%s", cmd, b)
		if code != "0" {
			t.Fatalf("%s: %s\nexit status %s; output:\n%s%s", where, cmd, code, b, s.jobLogs())
		}
		return
	}
	if addr != "" {
		s.stopServerAt(t, addr)
	}
	log := filepath.Join(s.dir, fmt.Sprintf("job-%d.log", s.n))
	pid, err := strconv.Atoi(s.send(t, where, fmt.Sprintf("</dev/null 3>&- >>%q 2>&1 %s &\necho $! >&3\n", log, line)))
	if err != nil {
		t.Fatalf("%s: %s: no process id", where, cmd)
	}
	j := &job{pid: pid, cmd: cmd, where: where, log: log, addr: addr}
	s.jobs = append(s.jobs, j)
	fmt.Fprintf(s.out, "$ %s  # in the background, pid %d\n", cmd, pid)
	if addr != "" {
		s.waitListen(t, j)
	}
}

// dialable returns the address to dial for a listen address: loopback
// for one that listens on every interface.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// workLogs returns the *.log files the page's commands wrote in the
// working directory, where a server's output goes with 2>hub.log.
func (s *session) workLogs() string {
	var b strings.Builder
	logs, _ := filepath.Glob(filepath.Join(s.cmd.Dir, "*.log"))
	for _, l := range logs {
		fmt.Fprintf(&b, "\n--- %s\n%s", filepath.Base(l), readLog(l))
	}
	return b.String()
}

// waitListen waits until j accepts connections.
func (s *session) waitListen(t *testing.T, j *job) {
	t.Helper()
	deadline := time.Now().Add(listenTimeout)
	for {
		if c, err := net.DialTimeout("tcp", j.addr, time.Second); err == nil {
			c.Close()
			return
		}
		if !alive(j.pid) {
			t.Fatalf("%s: %s\nexited before listening on %s; its output:\n%s%s", j.where, j.cmd, j.addr, readLog(j.log), s.workLogs())
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s\ndid not listen on %s within %v; its output:\n%s", j.where, j.cmd, j.addr, listenTimeout, readLog(j.log))
		}
		time.Sleep(20 * time.Millisecond) // polling a socket: nothing to wait on
	}
}

// stopServerAt stops the server that listens on addr, if one does.
func (s *session) stopServerAt(t *testing.T, addr string) {
	t.Helper()
	for _, j := range s.jobs {
		if j.addr == addr && alive(j.pid) {
			stopGroup(j.pid)
			j.addr = ""
		}
	}
}

// console runs a console block and compares each command's output.
func (s *session) console(t *testing.T, where, text string, ports *portMap) {
	t.Helper()
	var cmds, wants []string
	for _, line := range strings.Split(text, "\n") {
		if c, ok := strings.CutPrefix(line, "$ "); ok {
			cmds = append(cmds, c)
			wants = append(wants, "")
			continue
		}
		if len(cmds) == 0 {
			if strings.TrimSpace(line) != "" {
				t.Fatalf("%s: a console block begins with a \"$ \" command", where)
			}
			continue
		}
		wants[len(wants)-1] += line + "\n"
	}
	for i, c := range cmds {
		s.n++
		out := filepath.Join(s.dir, fmt.Sprintf("out-%d", s.n))
		s.send(t, where, fmt.Sprintf("{ %s\n} </dev/null 3>&- >%q 2>&1; echo $? >&3\n", c, out))
		b, _ := os.ReadFile(out)
		got := ports.unmap(string(b))
		want := ports.unmap(wants[i])
		if !matchOutput(strings.TrimRight(got, "\n"), strings.TrimRight(want, "\n")) {
			t.Errorf("%s: $ %s\nprints:\n%s\nthe page shows:\n%s", where, ports.unmap(c), got, want)
		}
	}
}

// matchOutput compares output with the lines a page shows, where a line
// "..." stands for any number of lines.
func matchOutput(got, want string) bool {
	var re strings.Builder
	re.WriteString("^")
	for _, line := range strings.Split(want, "\n") {
		if line == "..." {
			re.WriteString(`(?:[^\n]*\n)*`)
			continue
		}
		re.WriteString(regexp.QuoteMeta(line) + `\n`)
	}
	re.WriteString("$")
	return regexp.MustCompile(re.String()).MatchString(got + "\n")
}

// stop ends every background job, then the shell and anything left in its
// session.
func (s *session) stop(t *testing.T) {
	for _, j := range s.jobs {
		if alive(j.pid) {
			stopGroup(j.pid)
		}
	}
	s.script.Close()
	select {
	case <-s.exited:
	case <-time.After(stopTimeout):
	}
	killSession(s.cmd.Process.Pid)
	<-s.exited
	if t.Failed() || testing.Verbose() {
		t.Logf("session output:\n%s%s%s", s.out, s.jobLogs(), s.workLogs())
	}
}

func (s *session) jobLogs() string {
	var b strings.Builder
	for _, j := range s.jobs {
		fmt.Fprintf(&b, "\n--- %s: %s (background)\n%s", j.where, j.cmd, readLog(j.log))
	}
	return b.String()
}

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 8000 {
		b = append([]byte("...\n"), b[len(b)-8000:]...)
	}
	return string(b)
}

// alive reports whether process pid runs (and is not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}

// stopGroup sends SIGTERM to the process group pgid, as Ctrl-C in a
// terminal reaches a program and what it started, and SIGKILL to what is
// left of it after stopTimeout.
func stopGroup(pgid int) {
	syscall.Kill(-pgid, syscall.SIGTERM)
	deadline := time.Now().Add(stopTimeout)
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			syscall.Kill(-pgid, syscall.SIGKILL)
			return
		}
		time.Sleep(20 * time.Millisecond) // processes of other parents: nothing to wait on
	}
}

// groupAlive reports whether a live process is in process group pgid.
func groupAlive(pgid int) bool {
	return len(procsWhere(func(pgrp, _ int) bool { return pgrp == pgid })) > 0
}

// killSession kills every process of session sid.
func killSession(sid int) {
	for _, pid := range procsWhere(func(_, sess int) bool { return sess == sid }) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// procsWhere returns the live processes whose process group and session
// satisfy keep.
func procsWhere(keep func(pgrp, session int) bool) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		// After the name: state ppid pgrp session ...
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 4 || f[0] == "Z" {
			continue
		}
		pgrp, _ := strconv.Atoi(f[2])
		sess, _ := strconv.Atoi(f[3])
		if keep(pgrp, sess) {
			out = append(out, pid)
		}
	}
	return out
}

// TestParseBlocks checks the reading of pages, on which TestDocs relies.
func TestParseBlocks(t *testing.T) {
	page := "# Title\n\n```sh\necho one \\\n  two   # a comment\n\n# alone\nssehub serve &\n```\n\n" +
		"<!-- doc-test: skip needs Docker -->\n```sh\ndocker run x\n```\n\n" +
		"<!-- doc-test: hub --retry 1s -->\n<!-- doc-test: replace \"--events 20000\" \"--events 20\" -->\n" +
		"```console\n$ ssehub bench --events 20000\n...\n```\n\n```\noutput\n```\n\n````go\npackage main\n```\n````\n"
	blocks, err := parseBlocks(page)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 5 {
		t.Fatalf("%d blocks, want 5: %+v", len(blocks), blocks)
	}
	if b := blocks[0]; !b.runs() || b.line != 3 || !slices.Equal(commands(b.text), []string{"echo one \\\n  two   # a comment", "ssehub serve &"}) {
		t.Errorf("block 1: %+v, commands %q", b, commands(b.text))
	}
	if got := stripComment("echo 'a # b' \"c # d\" # e"); got != "echo 'a # b' \"c # d\"" {
		t.Errorf("stripComment: %q", got)
	}
	if b := blocks[1]; b.runs() || b.skip != "needs Docker" {
		t.Errorf("block 2: %+v", b)
	}
	if b := blocks[2]; !b.runs() || !b.hubWanted || !slices.Equal(b.hub, []string{"--retry", "1s"}) || b.replaced() != "$ ssehub bench --events 20\n..." {
		t.Errorf("block 3: %+v, replaced %q", b, b.replaced())
	}
	if b := blocks[3]; b.runs() || b.lang != "" {
		t.Errorf("block 4: %+v", b)
	}
	if b := blocks[4]; !isProgram(b) || b.text != "package main\n```" {
		t.Errorf("block 5: %+v", b)
	}
	for _, bad := range []string{
		"<!-- doc-test: skip -->\n```sh\nx\n```\n",
		"<!-- doc-test: frobnicate -->\n```sh\nx\n```\n",
		"<!-- doc-test: skip reason -->\n\ntext\n```sh\nx\n```\n",
		"```sh\nunclosed\n",
	} {
		if _, err := parseBlocks(bad); err == nil {
			t.Errorf("parseBlocks(%q) succeeded", bad)
		}
	}

	ports := &portMap{to: map[int]int{}, back: map[int]int{}}
	ports.add(8080, 41000)
	ports.add(6379, 42000)
	in := "serve --addr :8080 --broker redis://127.0.0.1:6379/0; curl http://localhost:8080/x; --addr 0.0.0.0:8080; at 10:30 on :9999"
	want := "serve --addr 127.0.0.1:41000 --broker redis://127.0.0.1:42000/0; curl http://localhost:41000/x; --addr 127.0.0.1:41000; at 10:30 on :9999"
	if got := ports.remap(in); got != want {
		t.Errorf("remap:\n%s\nwant\n%s", got, want)
	}
	ports.add(14221, 43000)
	if got := ports.remap("nats-server -a 127.0.0.1 -p 14221 --http_port 14221 --cluster nats://127.0.0.1:14221"); got != "nats-server -a 127.0.0.1 -p 43000 --http_port 43000 --cluster nats://127.0.0.1:43000" {
		t.Errorf("remap of port flags: %s", got)
	}
	if got := natsAddr(" nats-server -js -a 127.0.0.1 -p 43000 &"); got != "127.0.0.1:43000" {
		t.Errorf("natsAddr: %q", got)
	}
	if got := ports.unmap("listening on 127.0.0.1:41000"); got != "listening on 127.0.0.1:8080" {
		t.Errorf("unmap: %s", got)
	}
	for _, c := range []struct {
		got, want string
		ok        bool
	}{
		{"a\nb", "a\nb", true},
		{"a\nb\nc", "a\n...\nc", true},
		{"a\nb\nc", "a\n...", true},
		{"a\nb\nc", "...\nc", true},
		{"a\nb", "a\nc", false},
		{"a\nb\nc", "a\nb", false},
	} {
		if matchOutput(c.got, c.want) != c.ok {
			t.Errorf("matchOutput(%q, %q) != %v", c.got, c.want, c.ok)
		}
	}
}
