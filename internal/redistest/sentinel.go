package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinels of a Sentinel monitor their master
// under.
const MasterName = "ssehub"

// Sentinel timeouts. They are short so that a failover finishes in a few
// seconds: the sentinels call a master down after downAfter without an
// answer, and give a failover failoverTimeout before trying again.
const (
	downAfter       = 1000 * time.Millisecond
	failoverTimeout = 3000 * time.Millisecond
	// discoverTimeout bounds how long the sentinels may take to find each
	// other and the replica when they start.
	discoverTimeout = 20 * time.Second
	// tiltPeriod is how long a sentinel stops acting after it finds it
	// was not scheduled for over two seconds, as happens on a loaded
	// test machine: 30 s by default, longer than a test waits for a
	// failover. Two down-after periods give it fresh replies from every
	// node.
	tiltPeriod = 2 * downAfter
	// pollInterval is how often the waits below ask again.
	pollInterval = 50 * time.Millisecond
)

// Sentinel is a master, one replica and three redis-sentinel processes
// that watch them, as a test owns them. Its methods are safe for
// concurrent use.
type Sentinel struct {
	tb        testing.TB
	nodes     []*Server // the first one started as master
	sentinels []*sentinelProc
}

// sentinelProc is one redis-sentinel process.
type sentinelProc struct {
	dir    string
	port   int
	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// SentinelBinary returns the path of redis-sentinel, or "" when it is not
// installed.
func SentinelBinary() string {
	if p, err := exec.LookPath("redis-sentinel"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/bin/redis-sentinel", "/usr/local/bin/redis-sentinel"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	return ""
}

// StartSentinel starts a master, a replica of it and three sentinels that
// monitor the master as MasterName with a quorum of two, all on free
// loopback ports, and waits until every sentinel knows the replica and
// the other sentinels, so that a failover can start at once. Everything
// stops when the test ends. Without redis-server or redis-sentinel it
// skips the test, or fails it when CI=true.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	bin := SentinelBinary()
	if bin == "" {
		msg := "redis-sentinel not found; install it (Debian: apt-get install redis-sentinel) or run ./scripts/test"
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	// Redis waits five seconds by default before a full copy to a
	// replica, in case more replicas ask.
	fast := []string{"--repl-diskless-sync-delay", "0"}
	master := StartWith(tb, Options{Args: fast})
	replica := StartWith(tb, Options{Args: append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(master.Port())}, fast...)})
	s := &Sentinel{tb: tb, nodes: []*Server{master, replica}}
	s.waitSynced(replica, master)
	for range 3 {
		p := &sentinelProc{dir: tempDir(tb)}
		tb.Cleanup(p.stop)
		var err error
		for range 5 {
			if p.port, err = freePort(); err != nil {
				tb.Fatalf("redistest: %v", err)
			}
			if err = p.start(bin, master.Port()); err == nil {
				break
			}
		}
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		s.sentinels = append(s.sentinels, p)
	}
	s.waitDiscovered()
	return s
}

func (p *sentinelProc) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

func (p *sentinelProc) logPath() string { return filepath.Join(p.dir, "sentinel.log") }

func (p *sentinelProc) start(bin string, masterPort int) error {
	conf := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
daemonize no
dir %s
logfile %s
sentinel monitor %s 127.0.0.1 %d 2
sentinel down-after-milliseconds %[4]s %[6]d
sentinel failover-timeout %[4]s %[7]d
sentinel parallel-syncs %[4]s 1
`, p.port, p.dir, p.logPath(), MasterName, masterPort, downAfter.Milliseconds(), failoverTimeout.Milliseconds())
	// The sentinel rewrites its configuration file as it learns.
	path := filepath.Join(p.dir, "sentinel.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return err
	}
	cmd := exec.Command(bin, path)
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	if err := waitPing(p.addr(), exited); err != nil {
		cmd.Process.Kill()
		<-exited
		b, _ := os.ReadFile(p.logPath())
		return fmt.Errorf("redis-sentinel on port %d: %w\n%s", p.port, err, b)
	}
	c := redis.NewSentinelClient(&redis.Options{Addr: p.addr(), MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := c.Process(ctx, redis.NewStatusCmd(ctx, "sentinel", "debug", "tilt-period", tiltPeriod.Milliseconds())); err != nil {
		cmd.Process.Kill()
		<-exited
		return fmt.Errorf("redis-sentinel on port %d: SENTINEL DEBUG tilt-period: %w", p.port, err)
	}
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	return nil
}

func (p *sentinelProc) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
	p.cmd = nil
}

// Stall stops every sentinel process for d and then lets them go on, as
// a machine too busy to schedule them would. A stall of over two seconds
// puts a sentinel in TILT mode, where it stops acting for a while.
func (s *Sentinel) Stall(d time.Duration) {
	s.tb.Helper()
	for _, p := range s.sentinels {
		p.signal(syscall.SIGSTOP)
	}
	<-time.After(d)
	for _, p := range s.sentinels {
		p.signal(syscall.SIGCONT)
	}
}

func (p *sentinelProc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.cmd.Process.Signal(sig)
	}
}

// waitDiscovered waits until every sentinel knows one replica and two
// other sentinels.
func (s *Sentinel) waitDiscovered() {
	s.tb.Helper()
	deadline := time.Now().Add(discoverTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for _, p := range s.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: p.addr(), MaxRetries: -1})
		var last map[string]string
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			m, err := c.Master(ctx, MasterName).Result()
			cancel()
			if err == nil && m["num-slaves"] == "1" && m["num-other-sentinels"] == "2" {
				break
			}
			last = m
			if time.Now().After(deadline) {
				c.Close()
				s.tb.Fatalf("redistest: sentinel %s did not find the replica and the other sentinels within %v: %v, %v",
					p.addr(), discoverTimeout, last, err)
			}
			<-tick.C
		}
		c.Close()
	}
}

// SentinelAddrs returns the host:port of each sentinel.
func (s *Sentinel) SentinelAddrs() []string {
	out := make([]string, len(s.sentinels))
	for i, p := range s.sentinels {
		out[i] = p.addr()
	}
	return out
}

// URL returns the broker URL of the set:
// redis-sentinel://HOST:PORT,HOST:PORT,HOST:PORT/MasterName.
func (s *Sentinel) URL() string {
	return "redis-sentinel://" + strings.Join(s.SentinelAddrs(), ",") + "/" + MasterName
}

// Nodes returns the master and the replica, in the order they started:
// the first was the master then.
func (s *Sentinel) Nodes() []*Server { return s.nodes }

// MasterAddr returns the master's host:port as the first sentinel that
// answers reports it.
func (s *Sentinel) MasterAddr() (string, error) {
	var errs []error
	for _, p := range s.sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: p.addr(), MaxRetries: -1})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		a, err := c.GetMasterAddrByName(ctx, MasterName).Result()
		cancel()
		c.Close()
		if err == nil && len(a) == 2 {
			return net.JoinHostPort(a[0], a[1]), nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("no sentinel named the master: %w", errors.Join(errs...))
}

// Master returns the node the sentinels name as master.
func (s *Sentinel) Master() *Server {
	s.tb.Helper()
	a, err := s.MasterAddr()
	if err != nil {
		s.tb.Fatalf("redistest: %v", err)
	}
	return s.node(a)
}

func (s *Sentinel) node(addr string) *Server {
	s.tb.Helper()
	for _, n := range s.nodes {
		if n.Addr() == addr {
			return n
		}
	}
	s.tb.Fatalf("redistest: the sentinels name %s, which is no node of the set", addr)
	return nil
}

// WaitFailover waits until the sentinels name a master other than old and
// that node says it is a master, and returns it. It fails the test after
// timeout.
func (s *Sentinel) WaitFailover(old *Server, timeout time.Duration) *Server {
	s.tb.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	var why string
	for {
		a, err := s.MasterAddr()
		switch {
		case err != nil:
			why = err.Error()
		case a == old.Addr():
			why = "the sentinels still name " + a
		default:
			n := s.node(a)
			role, err := role(a)
			if err == nil && role == "master" {
				return n
			}
			why = fmt.Sprintf("%s is %q (%v)", a, role, err)
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redistest: no failover within %v: %s\n%s", timeout, why, s.sentinelLog())
		}
		<-tick.C
	}
}

// role returns what INFO replication says the node at addr is.
func role(addr string) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return "", err
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "role:"); ok {
			return v, nil
		}
	}
	return "", errors.New("INFO replication has no role")
}

// Rejoin starts a killed or stopped node again as a replica of the
// current master, as the sentinels would reconfigure it, and waits until
// its copy of the master is complete.
func (s *Sentinel) Rejoin(n *Server) {
	s.tb.Helper()
	m := s.Master()
	if m == n {
		s.tb.Fatalf("redistest: %s is still the master", n.Addr())
	}
	n.mu.Lock()
	n.opts.Args = []string{"--replicaof", "127.0.0.1", strconv.Itoa(m.Port()), "--repl-diskless-sync-delay", "0"}
	n.mu.Unlock()
	n.Start()
	s.waitSynced(n, m)
}

// waitSynced waits until replica has its first full copy of master.
func (s *Sentinel) waitSynced(replica, master *Server) {
	s.tb.Helper()
	deadline := time.Now().Add(discoverTimeout)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	c := redis.NewClient(&redis.Options{Addr: replica.Addr(), MaxRetries: -1})
	defer c.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.Info(ctx, "replication").Result()
		cancel()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			s.tb.Fatalf("redistest: %s did not copy the master %s within %v: %v\n%s", replica.Addr(), master.Addr(), discoverTimeout, err, replica.logTail())
		}
		<-tick.C
	}
}

// sentinelLog returns the end of each sentinel's log, for error messages.
func (s *Sentinel) sentinelLog() string {
	var b strings.Builder
	for _, p := range s.sentinels {
		log, _ := os.ReadFile(p.logPath())
		if len(log) > 1500 {
			log = log[len(log)-1500:]
		}
		fmt.Fprintf(&b, "--- sentinel %s\n%s", p.addr(), log)
	}
	return b.String()
}
