// Package auth provides an ssehub.Authorizer for static bearer tokens and
// JSON Web Tokens, so that only holders of the right token publish to a
// channel or read a private one.
//
// # Credentials
//
// A request presents at most one token, taken from the first of:
//
//   - an "Authorization: Bearer TOKEN" header, for back ends and the CLI;
//   - a cookie, "ssehub_token" unless Config.CookieName says otherwise, for
//     browsers, since EventSource cannot set headers;
//   - an "access_token" URL query parameter, only with
//     Config.AllowQueryToken. Off by default, because URLs end up in logs
//     and browser history; a request that sends one while it is off is
//     refused.
//
// Cookies and query parameters count for streams (GET) only. A publish
// request must send the header, so that a cross-site form post cannot
// publish with a browser's cookie.
//
// A request without a token is anonymous: it may read public channels and
// nothing else. A request with a token that is not valid (malformed,
// expired, not yet valid, signed with another key or algorithm, for another
// audience or issuer) is refused with 401, even for a public channel: a bad
// token is never downgraded to anonymous. Error messages name the reason
// and never contain the token.
//
// # Static publish token
//
// Config.PublishToken is a shared secret for back ends: it may publish to
// every channel and read the public ones. It is compared in constant time.
//
// # JSON Web Tokens
//
// With Config.Key set, a token is a JWT verified with that key. The
// accepted algorithms follow from the key's type and nothing else, so "alg":
// "none" and HMAC-with-a-public-key forgeries are refused:
//
//	[]byte (HMAC secret)      HS256, HS384, HS512
//	*rsa.PublicKey            RS256, RS384, RS512, PS256, PS384, PS512
//	*ecdsa.PublicKey          ES256 (P-256), ES384 (P-384), ES512 (P-521)
//	ed25519.PublicKey         EdDSA
//
// A token must carry "exp"; "nbf" is enforced when present, and "aud" and
// "iss" when Config.Audience and Config.Issuer are set. Its "publish" and
// "subscribe" claims list channel patterns:
//
//	{"sub": "user-42", "exp": 1767225600,
//	 "publish": ["orders.*"], "subscribe": ["user.42", "public.*"]}
//
// With JWTs on, every channel is private except those matching a pattern of
// Config.Public: a stream needs a token whose "subscribe" claim covers every
// channel it names that is not public. A stream ends when its token
// expires; a browser then reconnects with its renewed cookie and resumes
// from its last event id. Without a Key, every channel is public.
//
// # Channel patterns
//
// A pattern is written like a channel name, and each "*" in it stands for
// any run of zero or more channel characters (A-Z a-z 0-9 and "_-.:@/"),
// separators included:
//
//	user.42      only the channel user.42
//	orders.*     orders.1, orders.eu.7 and orders. (not orders)
//	*.public     news.public, a.b.public
//	*            every channel
//
// Every other character matches itself, case-sensitively. A pattern holds 1
// to ssehub.MaxChannelLen characters; an invalid pattern in a token's claim
// matches nothing.
package auth
