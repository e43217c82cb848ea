package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/auth"
)

// securityFlags are the serve flags that decide who may publish and read,
// and how many streams the hub serves.
type securityFlags struct {
	publishToken     *string
	publishTokenFile *string
	jwtSecretFile    *string
	jwtKeyFile       *string
	jwtAudience      *string
	jwtIssuer        *string
	jwtLeeway        *time.Duration
	public           listFlag
	cookieName       *string
	allowQueryToken  *bool
	maxConns         *int
	maxConnsPerIP    *int
	trustedProxies   listFlag
}

func addSecurityFlags(fs *flagSet) *securityFlags {
	sec, limits := fs.group(groupSecurity), fs.group(groupLimits)
	s := &securityFlags{
		publishToken:     sec.String("publish-token", "", "static bearer `token` that may publish to every channel (prefer --publish-token-file)"),
		publishTokenFile: sec.String("publish-token-file", "", "`file` holding the static publish token"),
		jwtSecretFile:    sec.String("jwt-secret-file", "", "`file` holding the HMAC secret that verifies JWTs (HS256/384/512)"),
		jwtKeyFile:       sec.String("jwt-key-file", "", "PEM `file` of the RSA, ECDSA or Ed25519 public key that verifies JWTs"),
		jwtAudience:      sec.String("jwt-audience", "", "`audience` a JWT's aud must hold"),
		jwtIssuer:        sec.String("jwt-issuer", "", "`issuer` a JWT's iss must be"),
		jwtLeeway:        sec.Duration("jwt-leeway", 0, "clock skew allowed when checking a JWT's exp and nbf"),
		cookieName:       sec.String("cookie-name", auth.DefaultCookieName, "`cookie` a browser's token comes in"),
		allowQueryToken:  sec.Bool("allow-query-token", false, "also accept a token in the access_token URL query parameter"),
		maxConns:         limits.Int("max-connections", 0, "most streams served at once; 0 means no limit"),
		maxConnsPerIP:    limits.Int("max-connections-per-ip", 0, "most streams served at once to one client address; 0 means no limit"),
	}
	sec.Var(&s.public, "public", "channel `pattern` anyone may read without a token when JWTs are on; repeat for several")
	limits.Var(&s.trustedProxies, "trusted-proxy", "`address` or CIDR of a reverse proxy whose X-Forwarded-For names the client for --max-connections-per-ip; repeat for several")
	fs.oneOf("publish-token", "publish-token-file")
	fs.oneOf("jwt-secret-file", "jwt-key-file")
	return s
}

// apply checks the flags and sets the hub's Authorizer and limits.
func (s *securityFlags) apply(cfg *ssehub.Config) error {
	if *s.maxConns < 0 || *s.maxConnsPerIP < 0 {
		return errors.New("--max-connections and --max-connections-per-ip must be >= 0")
	}
	cfg.MaxConnections = *s.maxConns
	cfg.MaxConnectionsPerIP = *s.maxConnsPerIP
	for _, v := range s.trustedProxies {
		p, err := parsePrefix(v)
		if err != nil {
			return fmt.Errorf("--trusted-proxy %q: not an address or CIDR", v)
		}
		cfg.TrustedProxies = append(cfg.TrustedProxies, p)
	}

	ac := auth.Config{
		Audience:        *s.jwtAudience,
		Issuer:          *s.jwtIssuer,
		Leeway:          *s.jwtLeeway,
		Public:          s.public,
		CookieName:      *s.cookieName,
		AllowQueryToken: *s.allowQueryToken,
	}
	switch {
	case *s.publishToken != "" && *s.publishTokenFile != "":
		return errors.New("give --publish-token or --publish-token-file, not both")
	case *s.publishToken != "":
		ac.PublishToken = *s.publishToken
	case *s.publishTokenFile != "":
		tok, err := auth.ReadTokenFile(*s.publishTokenFile)
		if err != nil {
			return errors.New(strings.TrimPrefix(err.Error(), "auth: "))
		}
		ac.PublishToken = tok
	}
	var err error
	switch {
	case *s.jwtSecretFile != "" && *s.jwtKeyFile != "":
		return errors.New("give --jwt-secret-file or --jwt-key-file, not both")
	case *s.jwtSecretFile != "":
		if ac.Key, err = auth.ReadSecretFile(*s.jwtSecretFile); err != nil {
			return secretError(err)
		}
	case *s.jwtKeyFile != "":
		ac.Key, err = auth.ReadPublicKeyFile(*s.jwtKeyFile)
	}
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "auth: "))
	}

	// Flags that would do nothing are refused, so that nobody believes a
	// channel is protected when it is not.
	if ac.Key == nil {
		for _, f := range []struct {
			name string
			set  bool
		}{{"--public", len(s.public) > 0}, {"--jwt-audience", ac.Audience != ""}, {"--jwt-issuer", ac.Issuer != ""}, {"--jwt-leeway", ac.Leeway != 0}} {
			if f.set {
				return fmt.Errorf("%s needs --jwt-secret-file or --jwt-key-file", f.name)
			}
		}
	}
	if ac.Key == nil && ac.PublishToken == "" {
		if *s.allowQueryToken || *s.cookieName != auth.DefaultCookieName {
			return errors.New("--allow-query-token and --cookie-name need a publish token or a JWT key")
		}
		return nil // an open hub
	}
	a, err := auth.New(ac)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "auth: "))
	}
	cfg.Authorizer = a
	return nil
}

// logAccess says who may do what, and warns when a hub that anyone on the
// network can reach lets anyone publish.
func (s *securityFlags) logAccess(logger *slog.Logger, cfg ssehub.Config, addr net.Addr) {
	if cfg.Authorizer == nil {
		level := slog.LevelInfo
		if tcp, ok := addr.(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
			level = slog.LevelWarn
		}
		logger.Log(context.Background(), level, "no access control: anyone who reaches the hub may publish and read every channel")
		return
	}
	jwtOn := *s.jwtSecretFile != "" || *s.jwtKeyFile != ""
	read := "all" // without JWTs every channel is public
	if jwtOn {
		read = "token or public"
	}
	logger.Info("access control",
		slog.Bool("publish_token", *s.publishToken != "" || *s.publishTokenFile != ""),
		slog.Bool("jwt", jwtOn),
		slog.String("read", read),
		slog.Any("public", []string(s.public)),
		slog.Bool("query_token", *s.allowQueryToken),
		slog.Int("max_connections", cfg.MaxConnections),
		slog.Int("max_connections_per_ip", cfg.MaxConnectionsPerIP))
}

// bearerHeader returns the request headers that carry tok, or nil for none.
func bearerHeader(tok string) http.Header {
	if tok == "" {
		return nil
	}
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// parsePrefix reads a CIDR, or a single address as a prefix of its own.
func parsePrefix(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
