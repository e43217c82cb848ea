package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/ssehub/auth"
)

func runToken(_ context.Context, args []string, _ io.Reader, stdout, _ io.Writer) error {
	fs := newFlagSet("token", "token --secret-file FILE [flags]", stdout)
	fs.about = "Prints a JWT signed with the HMAC secret that serve --jwt-secret-file verifies, " +
		"for development and tests."
	fs.examples = []string{
		"ssehub token --secret-file secret --publish 'orders.*' --ttl 1h",
		"ssehub token --secret-file secret --subscribe user.42 --subject alice --ttl 10m",
	}
	var publish, subscribe listFlag
	fs.Var(&publish, "publish", "channel `pattern` the token may publish to; repeat for several")
	fs.Var(&subscribe, "subscribe", "channel `pattern` the token may read; repeat for several")
	var (
		secretFile = fs.String("secret-file", "", "`file` holding the HMAC secret, as given to serve --jwt-secret-file")
		ttl        = fs.Duration("ttl", time.Hour, "how long the token is valid")
		subject    = fs.String("subject", "", "the token's sub claim: who the token is for")
		audience   = fs.String("audience", "", "the token's aud claim, as serve --jwt-audience requires")
		issuer     = fs.String("issuer", "", "the token's iss claim, as serve --jwt-issuer requires")
	)
	// The same settings as serve's: a token minted with them passes its checks.
	fs.env("secret-file", "SSEHUB_JWT_SECRET_FILE")
	fs.env("audience", "SSEHUB_JWT_AUDIENCE")
	fs.env("issuer", "SSEHUB_JWT_ISSUER")
	if err := fs.parse(args); err != nil {
		return err
	}
	if *secretFile == "" {
		return errors.New("--secret-file is required: the file serve --jwt-secret-file reads (see 'ssehub token --help')")
	}
	if *ttl <= 0 {
		return errors.New("--ttl must be positive")
	}
	secret, err := auth.ReadSecretFile(*secretFile)
	if err != nil {
		return secretError(err)
	}
	c := auth.NewClaims(*subject, publish, subscribe, *ttl)
	if *audience != "" {
		c.Audience = jwt.ClaimStrings{*audience}
	}
	c.Issuer = *issuer
	tok, err := auth.Sign(secret, c)
	if err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "auth: "))
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// secretError is the one-line message for a secret file auth refused, with
// the command that makes a good one when it is too short.
func secretError(err error) error {
	msg := strings.TrimPrefix(err.Error(), "auth: ")
	if strings.Contains(msg, "shorter than") {
		msg += "; make one with: head -c 32 /dev/urandom | base64 > secret"
	}
	return errors.New(msg)
}
