// Package natstest starts private nats-server processes with JetStream for
// tests: one server, or a cluster of several, each on free loopback ports
// with a store directory of its own. A test can kill a server, or stop it
// cleanly, and start it again on the same ports and store, to see what
// happens when a node goes away and comes back.
//
// Tests that use it skip when no nats-server binary is installed, unless
// the environment has CI=true: there they fail, so a CI run never passes by
// skipping. The package never touches a NATS server it did not start.
package natstest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// startTimeout bounds how long a server, or a cluster, may take to be
// ready.
const startTimeout = 30 * time.Second

// restartTimeout bounds how long a cluster that was down entirely may take
// to be ready again. Its streams' replicas must elect leaders anew once
// the metadata leader is back; on a loaded two-core machine a stream was
// seen to stay "not current" (and log "has NO quorum, stalled") for over
// 25 s after the metadata leader took 8 s.
const restartTimeout = 90 * time.Second

// Server is one nats-server process that a test owns. Its methods are
// safe for concurrent use; Kill, Stop and Start must not overlap for one
// server.
type Server struct {
	tb   testing.TB
	bin  string
	name string
	dir  string
	port int // client port
	http int // monitoring port
	conf string
	// routes is how many other servers a cluster has: ready means being
	// routed to all of them and knowing the JetStream leader too.
	routes int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the running process has exited
}

// Cluster is a set of servers routed to each other, forming one
// JetStream cluster.
type Cluster struct {
	Servers []*Server
}

// Binary returns the path of nats-server, or "" when it is not installed.
func Binary() string {
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

func binary(tb testing.TB) string {
	tb.Helper()
	bin := Binary()
	if bin == "" {
		msg := "nats-server not found; install it (Debian: apt-get install nats-server) or run ./scripts/test"
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	return bin
}

// Start starts one JetStream server and stops it when the test ends.
// Without a nats-server binary it skips the test, or fails it when
// CI=true.
func Start(tb testing.TB) *Server {
	tb.Helper()
	c := start(tb, 1)
	return c.Servers[0]
}

// StartCluster starts a JetStream cluster of n servers, named n1, n2, ...,
// waits until it has elected its leader, and stops it when the test ends.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	if n < 2 {
		tb.Fatalf("natstest: a cluster needs at least 2 servers, not %d", n)
	}
	return start(tb, n)
}

func start(tb testing.TB, n int) *Cluster {
	tb.Helper()
	bin := binary(tb)
	root := tb.TempDir()
	// Another process may take a port between choosing and binding it;
	// try a few sets.
	var err error
	for attempt := range 5 {
		c := &Cluster{}
		if err = c.configure(tb, bin, filepath.Join(root, strconv.Itoa(attempt)), n); err != nil {
			tb.Fatalf("natstest: %v", err)
		}
		tb.Cleanup(c.stopAll)
		if err = c.startAll(); err == nil {
			return c
		}
		c.stopAll()
	}
	tb.Fatalf("natstest: %v", err)
	return nil
}

// configure picks ports and writes each server's configuration file.
func (c *Cluster) configure(tb testing.TB, bin, root string, n int) error {
	ports, err := freePorts(3 * n)
	if err != nil {
		return err
	}
	var routes []string
	for i := range n {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3*i+2]))
	}
	for i := range n {
		s := &Server{
			tb:     tb,
			bin:    bin,
			name:   fmt.Sprintf("n%d", i+1),
			port:   ports[3*i],
			http:   ports[3*i+1],
			routes: n - 1,
		}
		s.dir = filepath.Join(root, s.name)
		if err := os.MkdirAll(s.dir, 0o755); err != nil {
			return err
		}
		var conf strings.Builder
		fmt.Fprintf(&conf, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n", s.name, s.port, s.http)
		fmt.Fprintf(&conf, "jetstream {\n  store_dir: %q\n  max_memory_store: 256MB\n  max_file_store: 64GB\n}\n", filepath.Join(s.dir, "store"))
		if n > 1 {
			fmt.Fprintf(&conf, "cluster {\n  name: natstest\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n",
				ports[3*i+2], strings.Join(routes, ", "))
		}
		s.conf = filepath.Join(s.dir, "nats.conf")
		if err := os.WriteFile(s.conf, []byte(conf.String()), 0o644); err != nil {
			return err
		}
		c.Servers = append(c.Servers, s)
	}
	return nil
}

// freePorts returns n distinct ports that were free a moment ago, below
// the kernel's range of ephemeral ports where it can: a server restarted
// on its ports must find them free, and the kernel gives ports of that
// range to the outgoing connections of any process, such as a client
// reconnecting to the cluster meanwhile.
func freePorts(n int) ([]int, error) {
	lo, hi := fixedRange()
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		addr := "127.0.0.1:0"
		if hi > lo && tries < 1000 {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(lo+rand.IntN(hi-lo)))
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			if addr == "127.0.0.1:0" {
				return nil, fmt.Errorf("find a free port: %w", err)
			}
			continue
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func (c *Cluster) startAll() error {
	for _, s := range c.Servers {
		if err := s.launch(); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(startTimeout)
	for _, s := range c.Servers {
		if err := s.waitReady(deadline); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) stopAll() {
	for _, s := range c.Servers {
		s.Stop()
	}
}

// URL returns the client URLs of all servers, comma-separated, as NATS
// clients and ssehub's --broker take them.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		urls[i] = s.URL()
	}
	return strings.Join(urls, ",")
}

// Server returns the server with the given name, or nil.
func (c *Cluster) Server(name string) *Server {
	for _, s := range c.Servers {
		if s.name == name {
			return s
		}
	}
	return nil
}

// Stop stops every server of the cluster.
func (c *Cluster) Stop() { c.stopAll() }

// Start starts every server of the cluster that is not running, with its
// ports and store, and waits until the cluster is ready again. Servers of a
// cluster that was down entirely must start together: none is ready
// before a majority of them runs.
func (c *Cluster) Start() {
	c.Servers[0].tb.Helper()
	var stopped []*Server
	for _, s := range c.Servers {
		if s.Running() {
			continue
		}
		if err := s.launch(); err != nil {
			s.tb.Fatalf("natstest: %v", err)
		}
		stopped = append(stopped, s)
	}
	// The servers wait together: one that exits at once must be launched
	// again while the others wait for it to elect a leader.
	deadline := time.Now().Add(restartTimeout)
	errs := make([]error, len(stopped))
	var wg sync.WaitGroup
	for i, s := range stopped {
		wg.Go(func() {
			err := s.waitReady(deadline)
			if errors.Is(err, errExited) {
				err = s.relaunch(deadline)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Servers[0].tb.Fatalf("natstest: %v", err)
	}
}

// Name returns the server's name, as JetStream reports it (n1, n2, ...).
func (s *Server) Name() string { return s.name }

// URL returns the server's nats:// client URL.
func (s *Server) URL() string { return "nats://" + s.Addr() }

// Addr returns the server's client host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the client port; it stays the same across restarts.
func (s *Server) Port() int { return s.port }

// Running reports whether the server process runs.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

// Start starts the stopped or killed server again with the same ports and
// store, and waits until it is ready. In a cluster it rejoins the others,
// which must have a majority running; see Cluster.Start.
func (s *Server) Start() {
	s.tb.Helper()
	if err := s.relaunch(time.Now().Add(startTimeout)); err != nil {
		s.tb.Fatalf("natstest: %v", err)
	}
}

// Kill ends the server with SIGKILL, as a crash would, and waits for the
// process to exit.
func (s *Server) Kill() { s.signal(syscall.SIGKILL) }

// Freeze stops the server process with SIGSTOP, and returns once it is
// stopped: its connections stay open and nothing answers, as with a server
// that hangs. Thaw resumes it.
func (s *Server) Freeze() {
	s.tb.Helper()
	s.pause(syscall.SIGSTOP)
	s.mu.Lock()
	pid := 0
	if s.cmd != nil {
		pid = s.cmd.Process.Pid
	}
	s.mu.Unlock()
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for pid != 0 && !stopped(pid) {
		if time.Now().After(deadline) {
			s.tb.Fatalf("natstest: %s not stopped after SIGSTOP", s.name)
		}
		<-tick.C
	}
}

// Thaw resumes a frozen server with SIGCONT.
func (s *Server) Thaw() { s.pause(syscall.SIGCONT) }

func (s *Server) pause(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		s.cmd.Process.Signal(sig)
	}
}

// Stop shuts the server down cleanly and waits for the process to exit.
func (s *Server) Stop() { s.signal(syscall.SIGTERM) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT) // a frozen server cannot stop
	s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd, s.exited = nil, nil
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "nats.log") }

func (s *Server) launch() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New(s.name + " already running")
	}
	cmd := exec.Command(s.bin, "-c", s.conf, "-l", s.logPath())
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	return nil
}

// waitReady polls the server until it answers a client's PING and its
// monitoring reports it healthy; in a cluster, also until it knows the
// JetStream leader.
func (s *Server) waitReady(deadline time.Time) error {
	s.mu.Lock()
	exited := s.exited
	s.mu.Unlock()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
	for {
		if err = s.ready(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s on port %d not ready: %w\n%s", s.name, s.port, err, s.logTail())
		}
		select {
		case <-exited:
			s.mu.Lock()
			if s.exited == exited {
				s.cmd, s.exited = nil, nil
			}
			s.mu.Unlock()
			return fmt.Errorf("%w: %s on port %d\n%s", errExited, s.name, s.port, s.logTail())
		case <-tick.C:
		}
	}
}

// errExited means a server process exited while it was starting.
var errExited = errors.New("exited during start")

// restarts bounds how often a server that exits while starting again on
// its ports is launched once more: another process may hold one of its
// ports for a moment, such as a client's connection that the kernel gave
// that port as its own.
const restarts = 5

// relaunch starts s again while it exits during start, and waits until it
// is ready.
func (s *Server) relaunch(deadline time.Time) error {
	var err error
	for range restarts {
		if err = s.launch(); err != nil {
			return err
		}
		if err = s.waitReady(deadline); !errors.Is(err, errExited) {
			return err
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-time.After(time.Until(deadline)):
			return err
		}
	}
	return err
}

func (s *Server) ready() error {
	if err := ping(s.Addr()); err != nil {
		return err
	}
	client := http.Client{Timeout: time.Second}
	resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", s.http))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz answered %s", resp.Status)
	}
	if s.routes == 0 {
		return nil
	}
	var routez struct {
		Routes int `json:"num_routes"`
	}
	if err := getJSON(client, fmt.Sprintf("http://127.0.0.1:%d/routez", s.http), &routez); err != nil {
		return err
	}
	if routez.Routes < s.routes {
		return fmt.Errorf("routed to %d of %d servers", routez.Routes, s.routes)
	}
	resp, err = client.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", s.http))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var jsz struct {
		Meta *struct {
			Leader string `json:"leader"`
		} `json:"meta_cluster"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&jsz); err != nil {
		return fmt.Errorf("jsz: %w", err)
	}
	if jsz.Meta == nil || jsz.Meta.Leader == "" {
		return errors.New("no JetStream leader yet")
	}
	return nil
}

func getJSON(client http.Client, url string, v any) error {
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("%s: %w", url, err)
	}
	return nil
}

// ping speaks enough of the NATS client protocol to get a PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	rd := bufio.NewReader(c)
	info, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(info, "INFO ") {
		return fmt.Errorf("server greeted with %q", strings.TrimSpace(info))
	}
	if _, err := c.Write([]byte("CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	if line != "PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// logTail returns the end of the server's log, for error messages. A
// message repeated on consecutive lines, such as a failing health check
// polled every few milliseconds, shows once with its count, so that the
// lines before it still fit.
func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath())
	var out []string
	var last string
	repeats := 0
	flush := func() {
		if repeats > 0 {
			out = append(out, fmt.Sprintf("    (%d more times)", repeats))
		}
		repeats = 0
	}
	for line := range strings.Lines(string(b)) {
		// A line is "[pid] date time [LVL] message".
		msg := line
		if f := strings.SplitN(line, " ", 4); len(f) == 4 {
			msg = f[3]
		}
		if msg == last {
			repeats++
			continue
		}
		flush()
		last = msg
		out = append(out, strings.TrimRight(line, "\n"))
	}
	flush()
	tail := strings.Join(out, "\n")
	if len(tail) > 3000 {
		tail = tail[len(tail)-3000:]
	}
	return tail
}
