package ssehub_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// guard bounds how long a test waits for something that, when broken,
// would never happen; it is no measure of speed.
const guard = 20 * time.Second

// rawRequest sends head (a request line and headers, without the blank
// line) to srv, declaring a body of 1,000 bytes that never comes, and
// returns the response and the connection it came on.
func rawRequest(t *testing.T, addr, head string) (*http.Response, net.Conn) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(guard))
	fmt.Fprintf(conn, "%s\r\nHost: x\r\nContent-Length: 1000\r\n\r\n", head)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: no answer: %v", head, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// Anything left after the response means the connection stayed open
	// for another request.
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("%s: %d, then the connection stayed open: %v", head, resp.StatusCode, err)
	}
	return resp, conn
}

// TestUnsentBodyClosed checks that a request declaring a body it never
// sends is answered and its connection closed at once, whatever route
// answers it without reading the body. The hub's read timeout is far longer
// than the test's guard, so it cannot be what ends them.
func TestUnsentBodyClosed(t *testing.T) {
	t.Parallel()
	_, srv := hubtest.Serve(t, ssehub.Config{Authorizer: testAuthorizer(time.Hour), ReadTimeout: time.Hour})
	for _, c := range []struct {
		head   string
		status int
	}{
		{"POST /publish HTTP/1.1", http.StatusUnauthorized},
		{"PUT /publish HTTP/1.1", http.StatusMethodNotAllowed},
		{"GET /sse?channel=%25zz HTTP/1.1", http.StatusBadRequest},
		{"GET /sse?channel=ok HTTP/1.1", http.StatusBadRequest},
		{"GET /nowhere HTTP/1.1", http.StatusNotFound},
		{"POST //publish HTTP/1.1", http.StatusTemporaryRedirect}, // the mux's redirect to the clean path
		{"GET /healthz HTTP/1.1", http.StatusOK},
		{"GET /readyz HTTP/1.1", http.StatusOK},
	} {
		resp, _ := rawRequest(t, srv.Listener.Addr().String(), c.head)
		if resp.StatusCode != c.status {
			t.Errorf("%s: status %d, want %d", c.head, resp.StatusCode, c.status)
		}
	}
}

// TestUnsentPublishBodyTimesOut checks that a publish whose body never
// arrives is answered 408 once the read timeout passes, and its connection
// closed.
func TestUnsentPublishBodyTimesOut(t *testing.T) {
	t.Parallel()
	_, srv := hubtest.Serve(t, ssehub.Config{ReadTimeout: 50 * time.Millisecond})
	resp, _ := rawRequest(t, srv.Listener.Addr().String(), "POST /publish HTTP/1.1")
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", resp.StatusCode)
	}
}

// TestConnectionsPerIPLimited checks that MaxConnectionsPerIP counts every
// connection, not only streams: connections over the limit from one
// address are closed as soon as they are accepted, so idle or half-sent
// requests cannot use up the server's file descriptors.
func TestConnectionsPerIPLimited(t *testing.T) {
	t.Parallel()
	const perIP = 3
	hub, err := ssehub.New(ssehub.Config{MaxConnectionsPerIP: perIP})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(hub)
	hub.LimitConns(srv.Config)
	srv.Start()
	t.Cleanup(func() { hub.Close(t.Context()); srv.Close() })
	addr := srv.Listener.Addr().String()

	// perIP connections that send nothing yet.
	held := make([]net.Conn, perIP)
	for i := range held {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		held[i] = c
	}
	// One more is closed without an answer, however long it waits.
	waitFor(t, "the connection over the limit to be closed", func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(guard))
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		_, err = http.ReadResponse(bufio.NewReader(c), nil)
		return err != nil
	})
	// The held connections still work.
	for _, c := range held {
		c.SetDeadline(time.Now().Add(guard))
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("connection under the limit: %v %v", resp, err)
		}
	}
	// Once one closes, a new connection is served.
	held[0].Close()
	waitFor(t, "a freed slot", func() bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(guard))
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == 200
	})
}
