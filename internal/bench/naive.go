package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Naive is a deliberately naive server-sent events broadcaster, written
// the way most tutorials and small hubs write one, as the baseline that
// benchmark figures are compared with: one goroutine per connection (the
// handler's), a map of subscriber channels behind one mutex, and for every
// event and every subscriber a formatted write and a flush. It serves the
// same routes as ssehub: GET /sse?channel=NAME and POST /publish with
// {"channel", "data"}. It keeps no history.
type Naive struct {
	// Heartbeat is the interval of comment lines on idle streams; zero
	// means 15 seconds.
	Heartbeat time.Duration

	mu   sync.Mutex
	seq  int64
	subs map[string]map[chan naiveEvent]struct{}
}

type naiveEvent struct {
	id   int64
	data json.RawMessage
}

// ServeHTTP serves /sse and /publish.
func (n *Naive) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/sse" && r.Method == http.MethodGet:
		n.stream(w, r)
	case r.URL.Path == "/publish" && r.Method == http.MethodPost:
		n.publish(w, r)
	default:
		http.Error(w, `{"error":"not found","code":"not_found"}`, http.StatusNotFound)
	}
}

func (n *Naive) stream(w http.ResponseWriter, r *http.Request) {
	channel := r.URL.Query().Get("channel")
	if channel == "" {
		channel = "sse"
	}
	ch := make(chan naiveEvent, 256)
	n.mu.Lock()
	if n.subs == nil {
		n.subs = map[string]map[chan naiveEvent]struct{}{}
	}
	if n.subs[channel] == nil {
		n.subs[channel] = map[chan naiveEvent]struct{}{}
	}
	n.subs[channel][ch] = struct{}{}
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(n.subs[channel], ch)
		n.mu.Unlock()
	}()

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher := w.(http.Flusher)
	flusher.Flush()
	hb := n.Heartbeat
	if hb <= 0 {
		hb = 15 * time.Second
	}
	ticker := time.NewTicker(hb)
	defer ticker.Stop()
	for {
		select {
		case e := <-ch:
			if _, err := fmt.Fprintf(w, "id: %d\ndata: %s\n\n", e.id, e.data); err != nil {
				return
			}
			flusher.Flush()
		case <-ticker.C:
			if _, err := fmt.Fprint(w, ":\n\n"); err != nil {
				return
			}
			flusher.Flush()
		case <-r.Context().Done():
			return
		}
	}
}

func (n *Naive) publish(w http.ResponseWriter, r *http.Request) {
	var m struct {
		Channel string          `json:"channel"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&m); err != nil || m.Data == nil {
		http.Error(w, `{"error":"bad request","code":"bad_request"}`, http.StatusBadRequest)
		return
	}
	if m.Channel == "" {
		m.Channel = "sse"
	}
	n.mu.Lock()
	n.seq++
	e := naiveEvent{id: n.seq, data: m.Data}
	for ch := range n.subs[m.Channel] {
		select {
		case ch <- e:
		default: // a full subscriber misses the event
		}
	}
	n.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"%d","channel":%q}`+"\n", e.id, m.Channel)
}

// ServeNaive serves a Naive broadcaster on addr, which must be a loopback
// address, until ctx ends. ready is called with the server's base URL once
// it listens.
func ServeNaive(ctx context.Context, addr string, ready func(baseURL string)) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("bench: naive server address %q is not a loopback address", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: &Naive{}, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	ready("http://" + ln.Addr().String())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Server is a hub the benchmark started: its base URL and process.
type Server struct {
	URL string
	PID int // 0 when it runs in this process
	cmd *exec.Cmd
	srv *http.Server
}

// StartNaive starts a Naive broadcaster in this process on a free
// loopback port.
func StartNaive() (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: &Naive{}, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return &Server{URL: "http://" + ln.Addr().String(), srv: srv}, nil
}

// StartProcess starts a server in a child process, name with args, which
// must print its base URL as the first line of its standard output. Its
// memory and CPU are then its own, and its connections do not count
// against this process's file limit.
func StartProcess(ctx context.Context, name string, args ...string) (*Server, error) {
	cmd := exec.Command(name, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &Server{PID: cmd.Process.Pid, cmd: cmd}
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(l)
		io.Copy(io.Discard, out)
	}()
	select {
	case l := <-line:
		if !strings.HasPrefix(l, "http://") {
			s.Close()
			return nil, fmt.Errorf("bench: %s did not print its URL (got %q)", name, l)
		}
		s.URL = l
		return s, nil
	case <-time.After(10 * time.Second):
	case <-ctx.Done():
	}
	s.Close()
	return nil, fmt.Errorf("bench: %s did not start", name)
}

// Close stops the server.
func (s *Server) Close() error {
	if s.srv != nil {
		return s.srv.Close()
	}
	s.cmd.Process.Signal(os.Interrupt)
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-done
	}
	return nil
}

// Targets returns the stream URL template and publish URL of the ssehub
// routes under base.
func Targets(base string) (streamURL, publishURL string) {
	base = strings.TrimSuffix(base, "/")
	return base + "/sse?channel={channel}", base + "/publish"
}
