package ssehub_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// TestStreamHTTP10 opens a stream as an HTTP/1.0 client (nginx's
// default proxy_http_version) and reads its body byte for byte: the
// events as they are, no chunk framing, and the end of the stream when
// the hub closes the connection. Both stream paths.
func TestStreamHTTP10(t *testing.T) {
	t.Parallel()
	for _, detach := range []bool{false, true} {
		t.Run(fmt.Sprintf("detach=%v", detach), func(t *testing.T) {
			t.Parallel()
			hub, ts := hubtest.Serve(t, ssehub.Config{Detach: detach, Heartbeat: -1})
			conn, err := net.Dial("tcp", ts.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /sse?channel=t&position=1 HTTP/1.0\r\n\r\n")
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusOK || len(resp.TransferEncoding) != 0 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("status %d, Transfer-Encoding %v, Content-Type %q", resp.StatusCode, resp.TransferEncoding, resp.Header.Get("Content-Type"))
			}
			// The position frame is the last thing the stream sends by
			// itself: once it is in, the stream is subscribed.
			first, err := br.ReadString('\n')
			if err != nil || first != "retry: 3000\n" {
				t.Fatalf("first line %q, %v", first, err)
			}
			var pos []string
			for len(pos) < 2 {
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatal(err)
				}
				pos = append(pos, line)
			}
			if !strings.HasPrefix(pos[0], "id: ") || pos[1] != "\n" {
				t.Fatalf("position frame %q", pos)
			}
			id := hubtest.Publish(t, hub, "t", `{"n":1}`)
			hubtest.Close(t, hub)
			rest, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("reading to the end: %v", err)
			}
			if want := "id: " + id + "\ndata: {\"n\":1}\n\n"; string(rest) != want {
				t.Fatalf("body after the position %q, want exactly %q", rest, want)
			}
		})
	}
}
