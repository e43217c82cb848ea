package auth_test

import (
	"net/http/httptest"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/ssehub/ssehub/auth"
)

// BenchmarkAuthorize measures what checking a credential adds to each
// publish request and each stream opened.
func BenchmarkAuthorize(b *testing.B) {
	const static = "static-publish-token-0123456789"
	hmacKey := []byte("0123456789abcdef0123456789abcdef-bench")
	c := claims([]string{"orders.*"}, []string{"user.42", "public.*"})
	cases := []struct {
		name string
		key  any
		tok  string
	}{
		{"publish-token", nil, static},
		{"HS256", hmacKey, sign(b, jwt.SigningMethodHS256, hmacKey, c)},
		{"ES256", &ecKey().PublicKey, sign(b, jwt.SigningMethodES256, ecKey(), c)},
		{"RS256", &rsaKey().PublicKey, sign(b, jwt.SigningMethodRS256, rsaKey(), c)},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			a, err := auth.New(auth.Config{PublishToken: static, Key: bc.key})
			if err != nil {
				b.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/sse?channel=user.42", nil)
			r.Header.Set("Authorization", "Bearer "+bc.tok)
			for b.Loop() {
				g, err := a.Authorize(r)
				if err != nil || !g.Authenticated {
					b.Fatal(err)
				}
			}
		})
	}
}
