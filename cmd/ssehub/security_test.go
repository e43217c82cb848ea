package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/ssehub/auth"
)

// writeFile writes content to a new file in the test's directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mintToken runs `ssehub token` and returns the token it prints.
func mintToken(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, "", append([]string{"token"}, args...)...)
	if code != 0 {
		t.Fatalf("token %v: exit %d, %s", args, code, errOut)
	}
	return strings.TrimSpace(out)
}

// httpDo sends a request to the hub with tok as a bearer token (none when
// empty) and returns the status and body; a stream is closed at once.
func httpDo(t *testing.T, method, url, tok, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == "text/event-stream" {
		return resp.StatusCode, ""
	}
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestCLIAuthMatrix runs each kind of token against HTTP publish, the
// publish command and the subscribe command of a hub that verifies JWTs
// with an HMAC secret.
func TestCLIAuthMatrix(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef-cli"
	secretFile := writeFile(t, "secret", secret+"\n")
	otherFile := writeFile(t, "other", "another-secret-another-secret-another-secret\n")
	hub := startHub(t, "--jwt-secret-file", secretFile, "--public", "public.*")

	expiredClaims := auth.NewClaims("late", []string{"orders.*"}, []string{"user.42"}, -time.Minute)
	expired, err := auth.Sign([]byte(secret), expiredClaims)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	right := auth.NewClaims("", []string{"orders.*"}, []string{"user.42"}, time.Hour)
	es256, err := jwt.NewWithClaims(jwt.SigningMethodES256, right).SignedString(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, right).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	rows := []struct {
		name   string
		token  string
		status int // for publishing and for reading user.42
	}{
		{"no token", "", 401},
		{"garbage", "garbage-not-a-jwt", 401},
		{"expired", expired, 401},
		{"wrong key", mintToken(t, "--secret-file", otherFile, "--publish", "orders.*", "--subscribe", "user.42"), 401},
		{"wrong alg none", none, 401},
		{"wrong alg ES256", es256, 401},
		{"valid but not covering", mintToken(t, "--secret-file", secretFile, "--publish", "invoices.*", "--subscribe", "user.43"), 403},
		{"valid", mintToken(t, "--secret-file", secretFile, "--publish", "orders.*", "--subscribe", "user.42", "--ttl", "10m"), 200},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			status, body := httpDo(t, "POST", hub.URL+"/publish", r.token, `{"channel":"orders.1","data":1}`)
			if status != r.status {
				t.Errorf("HTTP publish: %d %s, want %d", status, body, r.status)
			}

			args := []string{"publish", "--url", hub.URL, "--channel", "orders.1"}
			if r.token != "" {
				args = append(args, "--token", r.token)
			}
			out, errOut, code := runCLI(t, `{"n":1}`, args...)
			switch {
			case r.status == 200 && (code != 0 || strings.TrimSpace(out) == ""):
				t.Errorf("CLI publish: exit %d, stdout %q, stderr %q", code, out, errOut)
			case r.status != 200 && (code == 0 || !strings.Contains(errOut, "("+strconv.Itoa(r.status)+")") || strings.Count(errOut, "\n") != 1):
				t.Errorf("CLI publish: exit %d, stderr %q; want a one-line %d refusal", code, errOut, r.status)
			}
			if r.token != "" && len(r.token) > 20 && strings.Contains(errOut, r.token[len(r.token)-20:]) {
				t.Errorf("CLI publish echoes the token: %q", errOut)
			}

			if r.status == 200 {
				return // TestCLISubscribeWithToken reads with a valid token
			}
			args = []string{"subscribe", "--url", hub.URL, "--channel", "user.42", "--count", "1"}
			if r.token != "" {
				args = append(args, "--token", r.token)
			}
			_, errOut, code = runCLI(t, "", args...)
			if code == 0 || !strings.Contains(errOut, "answered "+strconv.Itoa(r.status)) {
				t.Errorf("CLI subscribe: exit %d, stderr %q; want a %d refusal", code, errOut, r.status)
			}
			if status, body := httpDo(t, "GET", hub.URL+"/sse?channel=user.42", r.token, ""); status != r.status {
				t.Errorf("HTTP subscribe: %d %s, want %d", status, body, r.status)
			}
		})
	}
}

// TestCLISubscribeWithToken reads a private channel with a token from
// --token-file, publishes with the static publish token from
// SSEHUB_PUBLISH_TOKEN, as serve reads it, and checks that a public
// channel needs no token.
func TestCLISubscribeWithToken(t *testing.T) {
	secretFile := writeFile(t, "secret", "0123456789abcdef0123456789abcdef-sub\n")
	staticFile := writeFile(t, "publish-token", "  static-publish-token-for-tests \n")
	hub := startHub(t, "--jwt-secret-file", secretFile, "--publish-token-file", staticFile, "--public", "public.*")
	tok := mintToken(t, "--secret-file", secretFile, "--subscribe", "user.42", "--subject", "alice")

	sub := exec.Command(binary, "subscribe", "--url", hub.URL, "--channel", "user.42", "--channel", "public.news", "--count", "2",
		"--token-file", writeFile(t, "token", tok+"\n"))
	var subOut, subErr bytes.Buffer
	sub.Stdout, sub.Stderr = &subOut, &subErr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sub.Wait() }()
	hub.waitLog(t, "stream opened", 1)

	for _, ch := range []string{"user.42", "public.news"} {
		pub := exec.Command(binary, "publish", "--url", hub.URL, "--channel", ch)
		pub.Env = append(os.Environ(), "SSEHUB_PUBLISH_TOKEN=static-publish-token-for-tests")
		pub.Stdin = strings.NewReader(`"for ` + ch + `"`)
		out, err := pub.CombinedOutput()
		if err != nil {
			t.Fatalf("publish with the static token from SSEHUB_PUBLISH_TOKEN: %v, %s", err, out)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("subscribe: %v, %s", err, subErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("subscribe did not get its two events")
	}
	if got := subOut.String(); !strings.Contains(got, `"data":"for user.42"`) || !strings.Contains(got, `"data":"for public.news"`) {
		t.Fatalf("subscribe printed %q", got)
	}
	if status, body := httpDo(t, "GET", hub.URL+"/sse?channel=public.news", "", ""); status != 200 {
		t.Fatalf("public channel without a token: %d %s", status, body)
	}
	if status, body := httpDo(t, "GET", hub.URL+"/sse?channel=user.42", "static-publish-token-for-tests", ""); status != 403 {
		t.Fatalf("private channel with the publish token: %d %s", status, body)
	}
}

func TestQueryTokenNotLogged(t *testing.T) {
	secretFile := writeFile(t, "secret", "0123456789abcdef0123456789abcdef-query\n")
	hub := startHub(t, "--jwt-secret-file", secretFile, "--allow-query-token")
	tok := mintToken(t, "--secret-file", secretFile, "--subscribe", "user.42")
	resp, err := http.Get(hub.URL + "/sse?channel=user.42&access_token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	hub.waitLog(t, "stream opened", 1)
	resp.Body.Close()
	hub.waitLog(t, "stream closed", 1)
	if l := hub.log.String(); strings.Contains(l, tok[len(tok)-20:]) || strings.Contains(l, "access_token") {
		t.Fatalf("the hub logged the token:\n%s", l)
	}
}

func TestServeSecurityFlagErrors(t *testing.T) {
	secret := writeFile(t, "secret", "0123456789abcdef0123456789abcdef\n")
	short := writeFile(t, "short", "tooshort\n")
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	private := writeFile(t, "private.pem", string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})))
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"secret and key", []string{"--jwt-secret-file", secret, "--jwt-key-file", secret}, "not both"},
		{"token and token file", []string{"--publish-token", "static-publish-token-123", "--publish-token-file", secret}, "not both"},
		{"public without JWT", []string{"--public", "x.*", "--publish-token", "static-publish-token-123"}, "--public needs"},
		{"audience without JWT", []string{"--jwt-audience", "a"}, "--jwt-audience needs"},
		{"query token without auth", []string{"--allow-query-token"}, "need a publish token or a JWT key"},
		{"short secret", []string{"--jwt-secret-file", short}, "shorter than 32 bytes"},
		{"missing secret", []string{"--jwt-secret-file", filepath.Join(t.TempDir(), "nope")}, "no such file"},
		{"private key", []string{"--jwt-key-file", private}, "private key"},
		{"not PEM", []string{"--jwt-key-file", secret}, "no PEM block"},
		{"short publish token", []string{"--publish-token", "short"}, "shorter than 16 bytes"},
		{"bad public pattern", []string{"--jwt-secret-file", secret, "--public", "a b"}, "invalid channel"},
		{"negative limit", []string{"--max-connections", "-1"}, "must be >= 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, errOut, code := runCLI(t, "", append([]string{"serve", "--addr", "127.0.0.1:0"}, c.args...)...)
			if code == 0 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, c.want) {
				t.Fatalf("exit %d, stderr %q; want one line with %q", code, errOut, c.want)
			}
		})
	}
}

func TestServeLimits(t *testing.T) {
	hub := startHub(t, "--max-connections-per-ip", "1", "--max-channels-per-connection", "2", "--max-message-bytes", "16")
	resp, err := http.Get(hub.URL + "/sse?channel=a")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("first stream: %d", resp.StatusCode)
	}
	// The limit counts connections too: a connection holds the address's
	// one slot until the hub has seen it close (or, for the first stream,
	// taken it over as a detached stream), and a new one is closed
	// unanswered until then. Each request therefore goes on a connection of
	// its own and is sent again until it is answered.
	once := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	answer := func(what, method, url, body string, header http.Header) *http.Response {
		t.Helper()
		var resp *http.Response
		waitFor(t, "an answer to "+what, func() bool {
			req, err := http.NewRequestWithContext(t.Context(), method, url, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range header {
				req.Header[k] = v
			}
			if resp, err = once.Do(req); err != nil {
				return false
			}
			resp.Body.Close()
			return true
		})
		return resp
	}
	second := answer("a second stream", "GET", hub.URL+"/sse?channel=a", "", nil)
	if second.StatusCode != 503 || second.Header.Get("Retry-After") == "" {
		t.Fatalf("second stream from one address: %d, Retry-After %q", second.StatusCode, second.Header.Get("Retry-After"))
	}
	if r := answer("three channels", "GET", hub.URL+"/sse?channel=a&channel=b&channel=c", "", nil); r.StatusCode != 400 {
		t.Fatalf("three channels: %d", r.StatusCode)
	}
	if r := answer("a large message", "POST", hub.URL+"/publish", `{"channel":"a","data":"more than sixteen bytes"}`, nil); r.StatusCode != 413 {
		t.Fatalf("large message: %d", r.StatusCode)
	}
	big := answer("128 KiB of headers", "GET", hub.URL+"/healthz", "", http.Header{"X-Big": {strings.Repeat("x", 128<<10)}})
	if big.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("128 KiB of headers: %d", big.StatusCode)
	}
	// The stream under the limit still works. A publish whose connection
	// was closed unanswered was not published, though publish cannot know
	// it (outcome unknown), and is sent again.
	var errOut string
	waitFor(t, "a publish", func() bool {
		var code int
		_, errOut, code = runCLI(t, `1`, "publish", "--url", hub.URL, "--channel", "a")
		if code != 0 && !strings.Contains(errOut, "cannot reach the hub") && !strings.Contains(errOut, "outcome unknown") {
			t.Fatalf("publish: %s", errOut)
		}
		return code == 0
	})
	buf := make([]byte, 256)
	var got string
	for !strings.Contains(got, "data: 1\n") {
		n, err := resp.Body.Read(buf)
		if err != nil {
			t.Fatalf("stream: %v after %q", err, got)
		}
		got += string(buf[:n])
	}
}

func TestTokenCommand(t *testing.T) {
	secret := "0123456789abcdef0123456789abcdef-mint"
	secretFile := writeFile(t, "secret", secret+"\r\n")
	tok := mintToken(t, "--secret-file", secretFile, "--publish", "orders.*", "--publish", "news", "--subscribe", "user.42",
		"--ttl", "90m", "--subject", "dev", "--audience", "ssehub", "--issuer", "me")
	a, err := auth.New(auth.Config{Key: []byte(secret), Audience: "ssehub", Issuer: "me"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	ttl := time.Until(c.ExpiresAt.Time)
	if strings.Join(c.Publish, " ") != "orders.* news" || strings.Join(c.Subscribe, " ") != "user.42" || c.Subject != "dev" ||
		ttl < 85*time.Minute || ttl > 91*time.Minute {
		t.Fatalf("claims %+v, expiring in %v", c, ttl)
	}

	for _, args := range [][]string{
		{},
		{"--secret-file", writeFile(t, "short", "short")},
		{"--secret-file", secretFile, "--publish", "a b"},
		{"--secret-file", secretFile, "--ttl", "0s"},
	} {
		_, errOut, code := runCLI(t, "", append([]string{"token"}, args...)...)
		if code == 0 || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "ssehub: token: ") {
			t.Errorf("token %v: exit %d, stderr %q", args, code, errOut)
		}
	}
}

// TestServeConnectionsPerIP checks that serve counts every connection from
// one address against --max-connections-per-ip, and that a request that
// declares a body it never sends is answered and closed at once.
func TestServeConnectionsPerIP(t *testing.T) {
	hub := startHub(t, "--max-connections-per-ip", "2", "--publish-token-file", writeFile(t, "tok", strings.Repeat("p", 32)))
	addr := strings.TrimPrefix(hub.URL, "http://")
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		return c
	}
	// An unauthenticated publish that never sends its body: 401, then the
	// connection closes.
	a := dial()
	fmt.Fprintf(a, "POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
	br := bufio.NewReader(a)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 401 {
		t.Fatalf("publish without credential: %d", resp.StatusCode)
	}
	if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("connection left open after the answer: %v", err)
	}
	a.Close()

	// Two idle connections hold the address's slots; a third is closed
	// unanswered.
	dial()
	dial()
	c := dial()
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		t.Fatalf("third connection from one address answered %d", resp.StatusCode)
	}
}
