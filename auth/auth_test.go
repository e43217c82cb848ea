package auth_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/auth"
	"github.com/ssehub/ssehub/internal/hubtest"
)

// keySetup is a JWT key the hub verifies with, and the ways to make tokens
// for it: right, with another key, and with algorithms it must refuse.
type keySetup struct {
	name      string
	key       func(t *testing.T) any
	valid     func(t *testing.T, c auth.Claims) string
	wrongKey  func(t *testing.T, c auth.Claims) string
	wrongAlgs map[string]func(t *testing.T, c auth.Claims) string
}

func keySetups() []keySetup {
	hmacSecret := []byte("0123456789abcdef0123456789abcdef-hmac")
	return []keySetup{
		{
			name:     "HMAC",
			key:      func(*testing.T) any { return hmacSecret },
			valid:    func(t *testing.T, c auth.Claims) string { return sign(t, jwt.SigningMethodHS256, hmacSecret, c) },
			wrongKey: func(t *testing.T, c auth.Claims) string { return sign(t, jwt.SigningMethodHS256, secret(t), c) },
			wrongAlgs: map[string]func(*testing.T, auth.Claims) string{
				"none":  unsigned,
				"RS256": func(t *testing.T, c auth.Claims) string { return sign(t, jwt.SigningMethodRS256, rsaKey(), c) },
				"ES256": func(t *testing.T, c auth.Claims) string { return sign(t, jwt.SigningMethodES256, ecKey(), c) },
			},
		},
		{
			name:     "RSA",
			key:      func(*testing.T) any { return &rsaKey().PublicKey },
			valid:    func(t *testing.T, c auth.Claims) string { return sign(t, jwt.SigningMethodRS256, rsaKey(), c) },
			wrongKey: func(t *testing.T, c auth.Claims) string { return sign(t, jwt.SigningMethodRS256, otherRSAKey(), c) },
			wrongAlgs: map[string]func(*testing.T, auth.Claims) string{
				"none": unsigned,
				// The classic confusion: HMAC keyed with the public key,
				// which anyone may know.
				"HS256 keyed with the public PEM": func(t *testing.T, c auth.Claims) string {
					return sign(t, jwt.SigningMethodHS256, publicPEM(t, &rsaKey().PublicKey), c)
				},
				"ES256": func(t *testing.T, c auth.Claims) string { return sign(t, jwt.SigningMethodES256, ecKey(), c) },
			},
		},
		{
			name:     "ECDSA",
			key:      func(*testing.T) any { return &ecKey().PublicKey },
			valid:    func(t *testing.T, c auth.Claims) string { return sign(t, jwt.SigningMethodES256, ecKey(), c) },
			wrongKey: func(t *testing.T, c auth.Claims) string { return sign(t, jwt.SigningMethodES256, otherECKey(), c) },
			wrongAlgs: map[string]func(*testing.T, auth.Claims) string{
				"none": unsigned,
				"HS256 keyed with the public PEM": func(t *testing.T, c auth.Claims) string {
					return sign(t, jwt.SigningMethodHS256, publicPEM(t, &ecKey().PublicKey), c)
				},
				"ES384": func(t *testing.T, c auth.Claims) string { return sign(t, jwt.SigningMethodES384, ec384Key(), c) },
			},
		},
	}
}

// TestAuthMatrix runs each kind of credential against each endpoint: HTTP
// publish, a stream on a private channel, and a stream on a public one.
// (The CLI's publish and subscribe run the same matrix in cmd/ssehub.)
func TestAuthMatrix(t *testing.T) {
	t.Parallel()
	type row struct {
		name            string
		token           func(t *testing.T) string // "" sends none
		publish         int
		private, public int
		reason          string // in the error of each refusal
	}
	right := claims([]string{"orders.*"}, []string{"user.42"})
	other := claims([]string{"invoices.*"}, []string{"user.43", "orders.*"})
	expired := claims([]string{"orders.*"}, []string{"user.42"})
	expired.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute))

	for _, ks := range keySetups() {
		t.Run(ks.name, func(t *testing.T) {
			t.Parallel()
			_, srv := hubServer(t, auth.Config{Key: ks.key(t), Public: []string{"public.*"}}, nil)
			rows := []row{
				{"no token", func(*testing.T) string { return "" }, 401, 401, 200, "credential is needed"},
				{"garbage", func(*testing.T) string { return "garbage-not-a-jwt" }, 401, 401, 401, "malformed token"},
				{"garbage with dots", func(*testing.T) string { return "eyJhbGciOiJIUzI1NiJ9.e30.c2ln" }, 401, 401, 401, "token"},
				{"expired", func(t *testing.T) string { return ks.valid(t, expired) }, 401, 401, 401, "token expired"},
				{"wrong key", func(t *testing.T) string { return ks.wrongKey(t, right) }, 401, 401, 401, "invalid token signature"},
				{"valid but not covering", func(t *testing.T) string { return ks.valid(t, other) }, 403, 403, 200, "does not allow"},
				{"valid", func(t *testing.T) string { return ks.valid(t, right) }, 200, 200, 200, ""},
			}
			for alg, mint := range ks.wrongAlgs {
				rows = append(rows, row{"wrong alg " + alg, func(t *testing.T) string { return mint(t, right) }, 401, 401, 401, "algorithm not accepted"})
			}
			for _, r := range rows {
				t.Run(r.name, func(t *testing.T) {
					t.Parallel()
					tok := r.token(t)
					var hdr http.Header
					if tok != "" {
						hdr = hubtest.Bearer(tok)
					}
					check := func(what string, a hubtest.Answer, want int) {
						t.Helper()
						if a.Status != want {
							t.Errorf("%s: status %d %s, want %d", what, a.Status, a.Body, want)
							return
						}
						if want == 200 {
							return
						}
						if msg := a.ErrorText(); !strings.Contains(msg, r.reason) {
							t.Errorf("%s: error %q does not name %q", what, msg, r.reason)
						}
						if tok != "" && strings.Contains(a.Body, tok) || len(tok) > 20 && strings.Contains(a.Body, tok[len(tok)-20:]) {
							t.Errorf("%s: the hubtest.Answer echoes the token: %s", what, a.Body)
						}
						if (want == 401) != strings.HasPrefix(a.Header.Get("WWW-Authenticate"), "Bearer") {
							t.Errorf("%s: status %d with WWW-Authenticate %q", what, want, a.Header.Get("WWW-Authenticate"))
						}
					}
					check("publish", hubtest.Request(t, http.DefaultClient, "POST", srv.URL+"/publish", hdr, `{"channel":"orders.1","data":1}`), r.publish)
					check("private stream", hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=user.42", hdr, ""), r.private)
					check("public stream", hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=public.news", hdr, ""), r.public)
				})
			}
		})
	}
}

func TestRegisteredClaims(t *testing.T) {
	t.Parallel()
	key := secret(t)
	_, srv := hubServer(t, auth.Config{Key: key, Audience: "ssehub", Issuer: "https://app.example"}, nil)
	good := func() auth.Claims {
		c := claims([]string{"*"}, nil)
		c.Audience = jwt.ClaimStrings{"other", "ssehub"}
		c.Issuer = "https://app.example"
		return c
	}
	cases := []struct {
		name   string
		edit   func(*auth.Claims)
		status int
		reason string
	}{
		{"all right", func(*auth.Claims) {}, 200, ""},
		{"no audience", func(c *auth.Claims) { c.Audience = nil }, 401, "required claim"},
		{"other audience", func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{"other"} }, 401, "audience not accepted"},
		{"no issuer", func(c *auth.Claims) { c.Issuer = "" }, 401, "required claim"},
		{"other issuer", func(c *auth.Claims) { c.Issuer = "https://evil.example" }, 401, "issuer not accepted"},
		{"no expiry", func(c *auth.Claims) { c.ExpiresAt = nil }, 401, "required claim"},
		{"not yet valid", func(c *auth.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(time.Hour)) }, 401, "not valid yet"},
		{"valid from now", func(c *auth.Claims) { c.NotBefore = jwt.NewNumericDate(time.Now().Add(-time.Second)) }, 200, ""},
		{"invalid publish pattern", func(c *auth.Claims) { c.Publish = []string{"orders.>"} }, 403, "does not allow"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cl := good()
			c.edit(&cl)
			a := hubtest.Request(t, http.DefaultClient, "POST", srv.URL+"/publish", hubtest.Bearer(sign(t, jwt.SigningMethodHS512, key, cl)), `{"channel":"orders.1","data":1}`)
			if a.Status != c.status || !strings.Contains(a.ErrorText(), c.reason) {
				t.Fatalf("status %d %s, want %d naming %q", a.Status, a.Body, c.status, c.reason)
			}
		})
	}
}

func TestPublishToken(t *testing.T) {
	t.Parallel()
	const static = "static-publish-token-0123456789"
	key := secret(t)
	for _, cfg := range []auth.Config{
		{PublishToken: static},
		{PublishToken: static, Key: key, Public: []string{"public.*"}},
	} {
		_, srv := hubServer(t, cfg, nil)
		for _, c := range []struct {
			name        string
			hdr         http.Header
			status      int
			private     int
			tokenInBody string
		}{
			{"static token", hubtest.Bearer(static), 200, 200, ""},
			{"static token, other case scheme", http.Header{"Authorization": {"bEaReR " + static}}, 200, 200, ""},
			{"wrong static token", hubtest.Bearer(static + "x"), 401, 401, static + "x"},
			{"prefix of the static token", hubtest.Bearer(static[:20]), 401, 401, static[:20]},
			{"basic scheme", http.Header{"Authorization": {"Basic " + static}}, 401, 401, static},
			{"empty bearer", http.Header{"Authorization": {"Bearer "}}, 401, 401, ""},
			{"two headers", http.Header{"Authorization": {"Bearer " + static, "Bearer " + static}}, 401, 401, static},
			{"none", nil, 401, 200, ""},
		} {
			if cfg.Key != nil && c.private == 200 {
				// With JWTs on, user.42 is private: the publish token
				// does not read it, and anonymous requests do not either.
				if c.hdr == nil {
					c.private = 401
				} else {
					c.private = 403
				}
			}
			a := hubtest.Request(t, http.DefaultClient, "POST", srv.URL+"/publish", c.hdr, `{"channel":"anything.at.all","data":1}`)
			if a.Status != c.status || c.tokenInBody != "" && strings.Contains(a.Body, c.tokenInBody) {
				t.Errorf("key %v, %s: publish status %d %s, want %d", cfg.Key != nil, c.name, a.Status, a.Body, c.status)
			}
			if a := hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=user.42", c.hdr, ""); a.Status != c.private {
				t.Errorf("key %v, %s: stream status %d %s, want %d", cfg.Key != nil, c.name, a.Status, a.Body, c.private)
			}
		}
	}
}

func TestTokenSources(t *testing.T) {
	t.Parallel()
	key := secret(t)
	tok := sign(t, jwt.SigningMethodHS256, key, claims(nil, []string{"user.42"}))
	logger, logs := hubtest.TextLogger()
	hub, srv := hubServer(t, auth.Config{Key: key, CookieName: "sid_sse"}, logger)
	queryHub, querySrv := hubServer(t, auth.Config{Key: key, AllowQueryToken: true}, logger)

	cases := []struct {
		name   string
		url    string
		hdr    http.Header
		status int
	}{
		{"named cookie", srv.URL + "/sse?channel=user.42", http.Header{"Cookie": {"sid_sse=" + tok}}, 200},
		{"default cookie when another is named", srv.URL + "/sse?channel=user.42", http.Header{"Cookie": {"ssehub_token=" + tok}}, 401},
		{"empty cookie is no token", srv.URL + "/sse?channel=user.42", http.Header{"Cookie": {"sid_sse="}}, 401},
		{"bad cookie", srv.URL + "/sse?channel=user.42", http.Header{"Cookie": {"sid_sse=" + tok + "x"}}, 401},
		{"header before cookie", srv.URL + "/sse?channel=user.42", http.Header{"Cookie": {"sid_sse=" + tok}, "Authorization": {"Bearer x.y.z"}}, 401},
		{"query token when off", srv.URL + "/sse?channel=user.42&access_token=" + tok, nil, 401},
		{"query token when on", querySrv.URL + "/sse?channel=user.42&access_token=" + tok, nil, 200},
		{"default cookie", querySrv.URL + "/sse?channel=user.42", http.Header{"Cookie": {"ssehub_token=" + tok}}, 200},
	}
	for _, c := range cases {
		a := hubtest.Request(t, http.DefaultClient, "GET", c.url, c.hdr, "")
		if a.Status != c.status {
			t.Errorf("%s: status %d %s, want %d", c.name, a.Status, a.Body, c.status)
		}
		if strings.Contains(a.Body, tok[len(tok)-20:]) {
			t.Errorf("%s: the hubtest.Answer echoes the token: %s", c.name, a.Body)
		}
	}
	// A cookie does not publish: a cross-site form post would carry it.
	pub := sign(t, jwt.SigningMethodHS256, key, claims([]string{"*"}, nil))
	if a := hubtest.Request(t, http.DefaultClient, "POST", srv.URL+"/publish", http.Header{"Cookie": {"sid_sse=" + pub}}, `{"channel":"x","data":1}`); a.Status != 401 {
		t.Errorf("publish with a cookie: %d %s, want 401", a.Status, a.Body)
	}
	if a := hubtest.Request(t, http.DefaultClient, "POST", querySrv.URL+"/publish?access_token="+pub, nil, `{"channel":"x","data":1}`); a.Status != 401 {
		t.Errorf("publish with a query token: %d %s, want 401", a.Status, a.Body)
	}
	if a := hubtest.Request(t, http.DefaultClient, "POST", srv.URL+"/publish", hubtest.Bearer(pub), `{"channel":"x","data":1}`); a.Status != 200 {
		t.Errorf("publish with the header: %d %s, want 200", a.Status, a.Body)
	}
	if a := hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=user.42&access_token="+tok, nil, ""); !strings.Contains(a.ErrorText(), "not accepted") {
		t.Errorf("query token when off: error %q does not say so", a.ErrorText())
	}

	// The streams end when the hubs close; their log records must not hold
	// the token or the query.
	hub.Close(context.Background())
	queryHub.Close(context.Background())
	for !strings.Contains(logs.String(), "stream closed") {
		select {
		case <-t.Context().Done():
			t.Fatal("no stream log record")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if l := logs.String(); strings.Contains(l, tok[len(tok)-20:]) || strings.Contains(l, "access_token") {
		t.Fatalf("log holds the token:\n%s", l)
	}
}

// TestExpiryEndsStream opens a stream with a token that expires in about
// a second: the hub ends the stream then, and a reconnect with the same
// token is refused.
func TestExpiryEndsStream(t *testing.T) {
	t.Parallel()
	key := secret(t)
	hub, srv := hubServer(t, auth.Config{Key: key}, nil)
	c := claims(nil, []string{"user.42"})
	// JWT times have a resolution of a second: this expires in 1 to 2 s.
	c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(2 * time.Second))
	tok := sign(t, jwt.SigningMethodHS256, key, c)

	a := hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=user.42", hubtest.Bearer(tok), "")
	if a.Stream == nil {
		t.Fatalf("status %d %s", a.Status, a.Body)
	}
	id, err := hub.Publish(t.Context(), ssehub.Message{Channel: "user.42", Data: []byte(`1`)})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := a.Stream.Dec.Next(); err != nil || e.LastEventID != id {
		t.Fatalf("got %+v, %v", e, err)
	}
	ended := make(chan error, 1)
	go func() { _, err := a.Stream.Dec.Next(); ended <- err }()
	select {
	case err := <-ended:
		if err != io.EOF {
			t.Fatalf("stream: %v; want it to end at expiry", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("stream still open 30 s after its token expired")
	}
	if !time.Now().After(c.ExpiresAt.Time) && !time.Now().Equal(c.ExpiresAt.Time) {
		t.Fatalf("stream ended before the token expired at %v", c.ExpiresAt.Time)
	}
	b := hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=user.42", http.Header{"Authorization": {"Bearer " + tok}, "Last-Event-Id": {id}}, "")
	if b.Status != 401 || !strings.Contains(b.ErrorText(), "expired") {
		t.Fatalf("reconnect with the expired token: %d %s", b.Status, b.Body)
	}
}

// TestPrivateEventsStayPrivate checks that an event on a private channel
// reaches the subscriber allowed to read it and nobody else.
func TestPrivateEventsStayPrivate(t *testing.T) {
	t.Parallel()
	key := secret(t)
	hub, srv := hubServer(t, auth.Config{Key: key, Public: []string{"public.*"}}, nil)
	alice := sign(t, jwt.SigningMethodHS256, key, claims(nil, []string{"user.42"}))
	bob := sign(t, jwt.SigningMethodHS256, key, claims(nil, []string{"user.43", "user.4"}))

	if a := hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=user.42&channel=public.news", hubtest.Bearer(bob), ""); a.Status != 403 {
		t.Fatalf("bob on alice's channel: %d %s", a.Status, a.Body)
	}
	if a := hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=user.42", nil, ""); a.Status != 401 {
		t.Fatalf("anonymous on alice's channel: %d %s", a.Status, a.Body)
	}
	aliceStream := hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=user.42&channel=public.news", hubtest.Bearer(alice), "")
	bobStream := hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=user.43&channel=user.4&channel=public.news", hubtest.Bearer(bob), "")
	anonStream := hubtest.Request(t, http.DefaultClient, "GET", srv.URL+"/sse?channel=public.news", nil, "")
	for _, a := range []hubtest.Answer{aliceStream, bobStream, anonStream} {
		if a.Stream == nil {
			t.Fatalf("stream refused: %d %s", a.Status, a.Body)
		}
	}

	publish := func(channel, data string) {
		if _, err := hub.Publish(t.Context(), ssehub.Message{Channel: channel, Data: json.RawMessage(data)}); err != nil {
			t.Fatal(err)
		}
	}
	publish("user.42", `"secret for alice"`)
	publish("user.420", `"secret for someone else"`)
	publish("public.news", `"news"`)

	if e, err := aliceStream.Stream.Dec.Next(); err != nil || e.Data != `"secret for alice"` {
		t.Fatalf("alice got %+v, %v", e, err)
	}
	for name, a := range map[string]hubtest.Answer{"alice": aliceStream, "bob": bobStream, "anonymous": anonStream} {
		// Public news comes after the secrets; whoever gets it first got
		// no secret before it.
		if e, err := a.Stream.Dec.Next(); err != nil || e.Data != `"news"` {
			t.Fatalf("%s got %+v, %v before the news", name, e, err)
		}
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct {
		name string
		cfg  auth.Config
	}{
		{"nothing", auth.Config{}},
		{"short publish token", auth.Config{PublishToken: "short"}},
		{"publish token with space", auth.Config{PublishToken: "a token with white space"}},
		{"short secret", auth.Config{Key: []byte("short")}},
		{"public without key", auth.Config{PublishToken: "static-publish-token-0123456789", Public: []string{"x"}}},
		{"bad public pattern", auth.Config{Key: secret(t), Public: []string{"a b"}}},
		{"private key", auth.Config{Key: ecKey()}},
		{"string key", auth.Config{Key: "secret-secret-secret-secret-secret"}},
		{"ed25519 private key", auth.Config{Key: ed25519.NewKeyFromSeed(make([]byte, 32))}},
	}
	for _, c := range cases {
		if _, err := auth.New(c.cfg); err == nil {
			t.Errorf("%s: New accepted %+v", c.name, c.cfg)
		}
	}
	if _, err := auth.New(auth.Config{Key: edPub}); err != nil {
		t.Errorf("Ed25519 public key: %v", err)
	}
}
