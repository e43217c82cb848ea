package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/ssehub"
)

// DefaultCookieName is the cookie a browser's token comes in unless
// Config.CookieName names another.
const DefaultCookieName = "ssehub_token"

// QueryParam is the URL query parameter that carries a token when
// Config.AllowQueryToken allows it.
const QueryParam = "access_token"

// Minimum lengths of secrets, in bytes.
const (
	MinPublishTokenLen = 16
	MinSecretLen       = 32 // RFC 7518 §3.2: an HS256 key is at least 256 bits
)

// maxTokenLen bounds the tokens Authorize parses.
const maxTokenLen = 16 << 10

// Config configures an Authorizer. At least one of PublishToken and Key
// must be set.
type Config struct {
	// PublishToken is a static bearer token that may publish to every
	// channel. Empty means none. It holds at least MinPublishTokenLen
	// bytes.
	PublishToken string
	// Key verifies JWTs and decides which algorithms they may use: a
	// []byte HMAC secret of at least MinSecretLen bytes, or an
	// *rsa.PublicKey (2048 bits or more), *ecdsa.PublicKey or
	// ed25519.PublicKey (see ReadSecretFile and ReadPublicKeyFile). Nil
	// turns JWTs off, and every channel is then public.
	Key any
	// Audience, when set, must be among a token's "aud".
	Audience string
	// Issuer, when set, must be a token's "iss".
	Issuer string
	// Public lists the patterns of channels anyone may read without a
	// token. It needs a Key.
	Public []string
	// CookieName is the cookie a browser's token comes in;
	// DefaultCookieName when empty.
	CookieName string
	// AllowQueryToken accepts a token in the QueryParam URL query
	// parameter, for clients that can set neither a header nor a cookie.
	// The hub never logs request URLs, but proxies in front of it may.
	AllowQueryToken bool
	// Leeway is the clock skew allowed when checking "exp" and "nbf". A
	// stream's credential then ends Leeway after its "exp". Negative is
	// an error.
	Leeway time.Duration
}

// Claims is the payload of a token: the registered claims, and the channel
// patterns its holder may publish to and subscribe to.
type Claims struct {
	Publish   []string `json:"publish,omitempty"`
	Subscribe []string `json:"subscribe,omitempty"`
	jwt.RegisteredClaims
}

// Authorizer checks the static publish token and JWTs of HTTP requests. It
// is an ssehub.Authorizer; set it as ssehub.Config.Authorizer. Its methods
// are safe for concurrent use.
type Authorizer struct {
	publishHash []byte // sha256 of Config.PublishToken; nil when unset
	key         any
	leeway      time.Duration
	methods     []string
	parser      *jwt.Parser
	public      patterns
	cookie      string
	allowQuery  bool
}

var _ ssehub.Authorizer = (*Authorizer)(nil)

// New returns an Authorizer configured by cfg.
func New(cfg Config) (*Authorizer, error) {
	if cfg.PublishToken == "" && cfg.Key == nil {
		return nil, errors.New("auth: neither a publish token nor a JWT key is set")
	}
	a := &Authorizer{cookie: cfg.CookieName, allowQuery: cfg.AllowQueryToken}
	if a.cookie == "" {
		a.cookie = DefaultCookieName
	}
	if cfg.PublishToken != "" {
		if len(cfg.PublishToken) < MinPublishTokenLen {
			return nil, fmt.Errorf("auth: the publish token is shorter than %d bytes", MinPublishTokenLen)
		}
		if strings.ContainsAny(cfg.PublishToken, " \t\r\n") {
			return nil, errors.New("auth: the publish token holds white space")
		}
		h := sha256.Sum256([]byte(cfg.PublishToken))
		a.publishHash = h[:]
	}
	if len(cfg.Public) > 0 && cfg.Key == nil {
		return nil, errors.New("auth: public channels need a JWT key; without one every channel is public")
	}
	var err error
	if a.public, err = compile(cfg.Public); err != nil {
		return nil, fmt.Errorf("auth: public: %w", err)
	}
	if cfg.Key != nil {
		if a.methods, err = methodsFor(cfg.Key); err != nil {
			return nil, err
		}
		a.key = cfg.Key
		opts := []jwt.ParserOption{jwt.WithValidMethods(a.methods), jwt.WithExpirationRequired()}
		if cfg.Audience != "" {
			opts = append(opts, jwt.WithAudience(cfg.Audience))
		}
		if cfg.Issuer != "" {
			opts = append(opts, jwt.WithIssuer(cfg.Issuer))
		}
		if cfg.Leeway < 0 {
			return nil, fmt.Errorf("auth: leeway %s is negative", cfg.Leeway)
		}
		if cfg.Leeway > 0 {
			opts = append(opts, jwt.WithLeeway(cfg.Leeway))
		}
		a.leeway = cfg.Leeway
		a.parser = jwt.NewParser(opts...)
	}
	return a, nil
}

// methodsFor returns the JWT algorithms key verifies: its type pins them.
func methodsFor(key any) ([]string, error) {
	switch k := key.(type) {
	case []byte:
		if len(k) < MinSecretLen {
			return nil, fmt.Errorf("auth: the JWT secret is shorter than %d bytes", MinSecretLen)
		}
		return []string{"HS256", "HS384", "HS512"}, nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("auth: the RSA key has %d bits; at least 2048 are needed", k.N.BitLen())
		}
		return []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}, nil
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []string{"ES256"}, nil
		case elliptic.P384():
			return []string{"ES384"}, nil
		case elliptic.P521():
			return []string{"ES512"}, nil
		}
		return nil, fmt.Errorf("auth: ECDSA curve %s is not supported", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return []string{"EdDSA"}, nil
	}
	return nil, fmt.Errorf("auth: a JWT key of type %T is not supported", key)
}

// Authorize implements ssehub.Authorizer.
func (a *Authorizer) Authorize(r *http.Request) (ssehub.Grant, error) {
	tok, err := a.credential(r)
	if err != nil {
		return ssehub.Grant{}, err
	}
	if tok == "" {
		return ssehub.Grant{Subscribe: a.isPublic}, nil
	}
	if a.publishHash != nil {
		h := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(h[:], a.publishHash) == 1 {
			return ssehub.Grant{Authenticated: true, Subject: "publish-token", Publish: all, Subscribe: a.isPublic}, nil
		}
	}
	if a.parser == nil {
		return ssehub.Grant{}, unauthorized("invalid token")
	}
	c, err := a.Verify(tok)
	if err != nil {
		return ssehub.Grant{}, err
	}
	pub, _ := compile(c.Publish)
	sub, _ := compile(c.Subscribe)
	return ssehub.Grant{
		Authenticated: true,
		Subject:       c.Subject,
		Publish:       pub.match,
		Subscribe:     func(ch string) bool { return a.isPublic(ch) || sub.match(ch) },
		Expires:       c.ExpiresAt.Time.Add(a.leeway),
	}, nil
}

func all(string) bool { return true }

// isPublic reports whether anyone may read channel.
func (a *Authorizer) isPublic(channel string) bool {
	return a.parser == nil || a.public.match(channel)
}

// credential returns the token r presents, or "" for none.
func (a *Authorizer) credential(r *http.Request) (string, error) {
	if hs := r.Header.Values("Authorization"); len(hs) > 0 {
		if len(hs) > 1 {
			return "", unauthorized("more than one Authorization header")
		}
		scheme, tok, _ := strings.Cut(hs[0], " ")
		if !strings.EqualFold(scheme, "Bearer") {
			return "", unauthorized("the Authorization header must use the Bearer scheme")
		}
		return token(strings.TrimSpace(tok))
	}
	// Cookies and URL tokens exist for EventSource, which only reads. A
	// publisher sends a header: a browser attaches cookies to cross-site
	// form posts too, and one could publish in the user's name.
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return "", nil
	}
	// An empty cookie is no credential: it is how a site logs a browser out.
	if c, err := r.Cookie(a.cookie); err == nil && c.Value != "" {
		return token(c.Value)
	}
	if v := r.URL.Query().Get(QueryParam); v != "" {
		if !a.allowQuery {
			return "", unauthorized("tokens in the URL are not accepted; send an Authorization header or the " + a.cookie + " cookie")
		}
		return token(v)
	}
	return "", nil
}

// token checks the rough shape of a presented token.
func token(s string) (string, error) {
	switch {
	case s == "":
		return "", unauthorized("empty token")
	case len(s) > maxTokenLen:
		return "", unauthorized("token too long")
	}
	return s, nil
}

// Verify checks a JWT's signature, algorithm and registered claims and
// returns its claims. Errors wrap ssehub.ErrUnauthorized and name the
// reason without quoting the token.
func (a *Authorizer) Verify(tok string) (*Claims, error) {
	if a.parser == nil {
		return nil, unauthorized("JWTs are not accepted")
	}
	var c Claims
	t, err := a.parser.ParseWithClaims(tok, &c, func(*jwt.Token) (any, error) { return a.key, nil })
	if err != nil {
		return nil, unauthorized(a.reason(t, err))
	}
	return &c, nil
}

// reason turns a JWT error into a fixed phrase: the library's messages may
// quote parts of the token.
func (a *Authorizer) reason(t *jwt.Token, err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed token"
	case t != nil && t.Method != nil && !slices.Contains(a.methods, t.Method.Alg()):
		return "token signing algorithm not accepted"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "invalid token signature"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "token not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "token audience not accepted"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "token issuer not accepted"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token lacks a required claim (exp, or aud and iss when configured)"
	}
	return "invalid token"
}

func unauthorized(reason string) error {
	return fmt.Errorf("%w: %s", ssehub.ErrUnauthorized, reason)
}

// Sign returns an HS256 token with claims c, signed with secret. It is
// meant for development and tests; production tokens come from the
// application that knows its users.
func Sign(secret []byte, c Claims) (string, error) {
	if len(secret) < MinSecretLen {
		return "", fmt.Errorf("auth: the secret is shorter than %d bytes", MinSecretLen)
	}
	for _, list := range [][]string{c.Publish, c.Subscribe} {
		if _, err := compile(list); err != nil {
			return "", fmt.Errorf("auth: %w", err)
		}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}

// NewClaims returns claims for subject that allow publishing to the
// channels matching publish and reading those matching subscribe, from now
// for ttl.
func NewClaims(subject string, publish, subscribe []string, ttl time.Duration) Claims {
	now := time.Now()
	return Claims{
		Publish:   publish,
		Subscribe: subscribe,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   subject,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
	}
}
