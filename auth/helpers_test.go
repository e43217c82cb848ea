package auth_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/auth"
	"github.com/ssehub/ssehub/internal/sse"
)

// Test keys, made once per test binary: RSA keys take a while.
var (
	rsaKey      = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
	otherRSAKey = sync.OnceValue(func() *rsa.PrivateKey { return mustRSA() })
	ecKey       = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P256()) })
	otherECKey  = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P256()) })
	ec384Key    = sync.OnceValue(func() *ecdsa.PrivateKey { return mustEC(elliptic.P384()) })
)

func mustRSA() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func mustEC(c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// publicPEM is the PEM "PUBLIC KEY" form of a public key.
func publicPEM(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// secret returns a fresh random HMAC secret.
func secret(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, 32)
	rand.Read(b)
	return []byte(base64.RawURLEncoding.EncodeToString(b))
}

// claims returns claims valid for an hour allowing publish and subscribe.
func claims(publish, subscribe []string) auth.Claims {
	return auth.NewClaims("tester", publish, subscribe, time.Hour)
}

// sign signs c with method and key.
func sign(t testing.TB, method jwt.SigningMethod, key any, c auth.Claims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// unsigned returns a token with "alg": "none" and claims c.
func unsigned(t *testing.T, c auth.Claims) string {
	t.Helper()
	return sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, c)
}

// hubServer starts a hub with the Authorizer of cfg on 127.0.0.1.
func hubServer(t *testing.T, cfg auth.Config, logger *slog.Logger) (*ssehub.Hub, *httptest.Server) {
	t.Helper()
	a, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ssehub.New(ssehub.Config{Authorizer: a, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		h.Close(ctx)
		srv.Close()
	})
	return h, srv
}

// answer is an HTTP answer: its status, and its JSON error body when it
// is not a stream.
type answer struct {
	status int
	header http.Header
	body   string
	stream *sse.Decoder
}

// do sends a request and, for a stream that opened, returns it open (it is
// closed when the test ends).
func do(t *testing.T, method, url string, hdr http.Header, body string) answer {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	a := answer{status: resp.StatusCode, header: resp.Header}
	if resp.Header.Get("Content-Type") == "text/event-stream" {
		a.stream = sse.NewDecoder(resp.Body)
		t.Cleanup(func() { cancel(); resp.Body.Close() })
		return a
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cancel()
	a.body = string(b)
	return a
}

// errorOf returns the "error" member of a JSON error body.
func errorOf(body string) string {
	var e struct{ Error string }
	json.NewDecoder(bytes.NewReader([]byte(body))).Decode(&e)
	return e.Error
}

// bufLogger returns a logger writing text records to a buffer.
func bufLogger() (*slog.Logger, *lockedBuffer) {
	b := &lockedBuffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
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

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
