// Package redistest starts a private redis-server for tests, on a free
// loopback port with its own data directory, and can stop and start it
// again on the same port to test what happens when Redis goes away, or
// freeze and thaw it (SIGSTOP, SIGCONT) to test what happens when it
// hangs. StartSentinel starts a master, a replica and three sentinels, to
// test a failover.
//
// Tests that use it skip when redis-server (or redis-sentinel) is not
// installed, unless the environment has CI=true: there they fail, so a CI
// run never passes by skipping.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Options configures a Server.
type Options struct {
	// AppendOnly turns on the append-only file, so that the data set
	// survives Stop and Start. Without it a restarted server is empty.
	AppendOnly bool
	// Args are further redis-server arguments, as in
	// []string{"--replicaof", "127.0.0.1", "6379"}.
	Args []string
}

// Server is one redis-server process that a test owns. Its methods are safe
// for concurrent use; Stop, Start and Restart must not overlap.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	opts Options
	port int
	// busPort is a cluster node's cluster bus port, 0 for other servers.
	busPort int

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the running process has exited
	frozen bool
}

// startTimeout bounds how long a server may take to answer PING.
const startTimeout = 15 * time.Second

// Binary returns the path of redis-server, or "" when it is not installed.
func Binary() string {
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// Start starts a server with default options and stops it when the test
// ends.
func Start(tb testing.TB) *Server { return StartWith(tb, Options{}) }

// StartWith starts a server configured by opts and stops it when the test
// ends. Without a redis-server binary it skips the test, or fails it when
// CI=true.
func StartWith(tb testing.TB, opts Options) *Server {
	tb.Helper()
	bin := Binary()
	if bin == "" {
		msg := "redis-server not found; install it (Debian: apt-get install redis-server) or run ./scripts/test"
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	s := &Server{tb: tb, bin: bin, dir: tempDir(tb), opts: opts}
	tb.Cleanup(s.shutdown)
	// Another process may take the port between choosing and binding it;
	// try a few.
	var err error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		// A cluster node's bus port is its port + 10000 by default, which
		// may be taken, or past 65535: it gets a free port of its own.
		if slices.Contains(opts.Args, "--cluster-enabled") {
			if s.busPort, err = freePort(); err != nil {
				tb.Fatalf("redistest: %v", err)
			}
		}
		if err = s.start(); err == nil {
			return s
		}
	}
	tb.Fatalf("redistest: %v", err)
	return nil
}

// tempDir returns a new directory for a process's files, removed when the
// test ends. It lies in memory (memDir) when the machine has room there:
// Redis and redis-sentinel fsync their configuration files as they
// change, and on a busy disk one fsync can stall them for seconds, long
// enough for a sentinel to stop acting (TILT mode) or a cluster node to be
// called failed.
func tempDir(tb testing.TB) string {
	if m := memDir(); m != "" {
		if d, err := os.MkdirTemp(m, "redistest-"); err == nil {
			tb.Cleanup(func() { os.RemoveAll(d) })
			return d
		}
	}
	return tb.TempDir()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Addr returns the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// URL returns a redis:// URL for database 0 of the server.
func (s *Server) URL() string { return "redis://" + s.Addr() + "/0" }

// Port returns the server's TCP port; it stays the same across restarts.
func (s *Server) Port() int { return s.port }

// Start starts the stopped server again on the same port and waits until
// it answers PING.
func (s *Server) Start() {
	s.tb.Helper()
	if err := s.start(); err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
}

// Stop shuts the server down and waits for the process to exit. Clients
// see their connections closed and new connections refused.
func (s *Server) Stop() { s.shutdown() }

// Restart stops the server and starts it again on the same port.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	s.Start()
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "redis.log") }

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("server already running")
	}
	appendOnly := "no"
	if s.opts.AppendOnly {
		appendOnly = "yes"
	}
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--dir", s.dir,
		"--save", "",
		"--appendonly", appendOnly,
		"--daemonize", "no",
		"--logfile", s.logPath(),
	}
	args = append(args, s.opts.Args...)
	if s.busPort != 0 {
		args = append(args, "--cluster-port", strconv.Itoa(s.busPort))
	}
	cmd := exec.Command(s.bin, args...)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	if err := waitPing(s.Addr(), exited); err != nil {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-server on port %d: %w\n%s", s.port, err, s.logTail())
	}
	s.cmd, s.exited = cmd, exited
	return nil
}

// waitPing polls addr with PING until it answers PONG, the process exits
// or startTimeout passes.
func waitPing(addr string, exited <-chan struct{}) error {
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var err error
	for {
		if err = ping(addr); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no PONG after %v: %w", startTimeout, err)
		}
		select {
		case <-exited:
			return errors.New("process exited during start")
		case <-tick.C:
		}
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		// -LOADING while an append-only file is read back.
		return fmt.Errorf("PING answered %q", bytes.TrimSpace([]byte(line)))
	}
	return nil
}

// Freeze stops the server process (SIGSTOP) without closing anything:
// connections stay open and new ones are accepted by the kernel, but
// nothing is answered until Thaw, as when Redis hangs or its machine
// stalls.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP, true) }

// Thaw lets a frozen server run again (SIGCONT); it answers what was sent
// meanwhile.
func (s *Server) Thaw() { s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, frozen bool) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.tb.Fatalf("redistest: %v to a server that is not running", sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.tb.Fatalf("redistest: %v: %v", sig, err)
	}
	s.frozen = frozen
}

// Kill ends the server at once with SIGKILL, as a crash would: nothing is
// flushed. Start brings it back on the same port.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.exited
	s.cmd, s.exited, s.frozen = nil, nil, false
}

func (s *Server) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	if s.frozen {
		// A stopped process would not act on SIGTERM.
		s.cmd.Process.Signal(syscall.SIGCONT)
		s.frozen = false
	}
	// SIGTERM is a clean shutdown: the append-only file, when on, is
	// flushed before exit.
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.cmd, s.exited = nil, nil
}

// logTail returns the end of the server's log, for error messages.
func (s *Server) logTail() string {
	b, _ := os.ReadFile(s.logPath())
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
