package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/auth"
	"github.com/ssehub/ssehub/broker/redisbroker"
)

// maxStdin bounds the message publish reads from stdin.
const maxStdin = 64 << 20

func runPublish(ctx context.Context, args []string, stdin io.Reader, stdout, _ io.Writer) error {
	fs := newFlagSet("publish", "publish [flags] < message.json", stdout)
	fs.about = "Publishes the one JSON document read on stdin, through the hub at --url or, " +
		"with a Redis --broker, straight into Redis, and prints the event's id."
	fs.examples = []string{
		`echo '{"msg": "hello"}' | ssehub publish --channel news --type greeting`,
		`ssehub publish --url http://127.0.0.1:8080 --token-file token --channel orders.7 < order.json`,
		`echo '{"msg": "hello"}' | ssehub publish --broker redis://127.0.0.1:6379/0 --channel news`,
	}
	var (
		channel = fs.String("channel", ssehub.DefaultChannel, "`channel` to publish to")
		typ     = fs.String("type", "", "event `type` (the event: field); empty for plain messages")
		id      = fs.String("id", "", "event `id`; empty lets the hub assign one")
		retry   = fs.Int("retry", 0, "reconnection time in `ms` sent with the event; 0 sends none")
		hubURL  = fs.String("url", "http://127.0.0.1:8080", "`URL` of the hub, or of its publish endpoint (http://host/events)")
		timeout = fs.Duration("timeout", 10*time.Second, "how long to wait for the hub or the broker")
		token   = fs.String("token", "", "bearer `token` for the hub: its publish token, or a JWT")
		tokFile = fs.String("token-file", "", "`file` holding the bearer token, which unlike --token other users cannot see in ps")
		format  = fs.String("format", "json", "how stdin is read: json (one JSON document), text (a string: stdin less one final newline) or lines (a list of its lines, as `flask sse publish` sends)")
		// With a Redis or NATS broker the message goes straight into it,
		// as the hubs' own publishes do; into Redis, trimming history as
		// they do.
		brokerURL    = fs.String("broker", "", "publish straight into this broker `URL` (redis://, rediss://, redis-sentinel://, redis-cluster://, nats:// or tls://) instead of through the hub at --url")
		historySize  = fs.Int("history-size", ssehub.DefaultHistorySize, "with a Redis --broker: events kept per channel; give the hubs' value")
		historyAge   = fs.Duration("history-age", ssehub.DefaultHistoryAge, "with a Redis --broker: how long events stay replayable; give the hubs' value")
		historyBytes = fs.Int64("history-bytes", ssehub.DefaultHistoryBytes, "with a Redis --broker: `bytes` the history of all channels may take; give the hubs' value")
		key          = fs.String("idempotency-key", "", "`key` naming this message: sent again with the same key, it is published once (default: a new random key)")
		envelope     = fs.String("redis-envelope", "invenio", redisEnvelopeUsage)
		waitReplicas = fs.Int("redis-wait-replicas", 0, redisWaitReplicasUsage)
		waitTimeout  = fs.Duration("redis-wait-timeout", redisbroker.DefaultWaitTimeout, redisWaitTimeoutUsage)
		natsFlags    = addNATSFlags(fs, true) // nats.go
	)
	// The deployment's settings: what serve reads, publish reads too.
	fs.env("url", "SSEHUB_URL")
	fs.env("token", "SSEHUB_PUBLISH_TOKEN")
	fs.env("token-file", "SSEHUB_PUBLISH_TOKEN_FILE")
	fs.env("broker", "SSEHUB_BROKER")
	fs.env("history-size", "SSEHUB_HISTORY_SIZE")
	fs.env("history-age", "SSEHUB_HISTORY_AGE")
	fs.env("history-bytes", "SSEHUB_HISTORY_BYTES")
	fs.env("redis-envelope", "SSEHUB_REDIS_ENVELOPE")
	fs.env("redis-wait-replicas", "SSEHUB_REDIS_WAIT_REPLICAS")
	fs.env("redis-wait-timeout", "SSEHUB_REDIS_WAIT_TIMEOUT")
	fs.oneOf("token", "token-file")
	if err := fs.parse(args); err != nil {
		return err
	}
	if fs.fromArgs["url"] && fs.fromArgs["broker"] {
		return errors.New("give --url or --broker, not both")
	}
	if fs.fromArgs["url"] {
		*brokerURL = "" // the command line wins over SSEHUB_BROKER
	}
	if *tokFile != "" {
		tok, err := auth.ReadTokenFile(*tokFile)
		if err != nil {
			return fmt.Errorf("%s: %s", fs.source("token-file"), strings.TrimPrefix(err.Error(), "auth: "))
		}
		*token = tok
	}
	if err := checkRedisEnvelope(*envelope); err != nil {
		return err
	}
	if err := checkRedisWait(fs, *waitReplicas, *waitTimeout); err != nil {
		return err
	}
	data, err := readData(stdin, *format)
	if err != nil {
		return err
	}
	if *key == "" {
		*key = newIdempotencyKey()
	}
	m := ssehub.Message{Channel: *channel, Data: data, Type: *typ, ID: *id, Retry: *retry, IdempotencyKey: *key}
	if err := m.Normalize(); err != nil {
		return errors.New(strings.TrimPrefix(err.Error(), "ssehub: "))
	}
	direct, err := directBroker(*brokerURL)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var assigned string
	if direct {
		if *historySize == 0 {
			*historySize = -1
		}
		if *historyBytes <= 0 {
			return fmt.Errorf("%s: %q must be 1 or more", fs.source("history-bytes"), fs.Lookup("history-bytes").Value)
		}
		assigned, err = publishBroker(ctx, *brokerURL, m, brokerOptions{historySize: *historySize, historyAge: *historyAge, historyBytes: *historyBytes, envelope: *envelope, waitReplicas: *waitReplicas, waitTimeout: *waitTimeout, nats: natsFlags.options()})
	} else {
		assigned, err = publishHTTP(ctx, *hubURL, *token, m)
	}
	switch {
	case errors.Is(err, errNotReplicated):
		return fmt.Errorf("%w; send it again with --idempotency-key %s to wait for the replicas again: it will not be published twice", err, m.IdempotencyKey)
	case errors.Is(err, errNotPublished):
		return fmt.Errorf("%w; nothing was published, it is safe to send it again", err)
	case errors.Is(err, errOutcomeUnknown):
		return fmt.Errorf("%w; it may or may not have been published: send it again with --idempotency-key %s to publish it at most once", err, m.IdempotencyKey)
	case err != nil:
		return err
	}
	fmt.Fprintln(stdout, assigned)
	return nil
}

// readData reads the event's data from r in the given format.
func readData(r io.Reader, format string) (json.RawMessage, error) {
	switch format {
	case "json", "text", "lines":
	default:
		return nil, fmt.Errorf("--format %q: use json, text or lines", format)
	}
	body, err := io.ReadAll(io.LimitReader(r, maxStdin+1))
	if err != nil {
		return nil, fmt.Errorf("reading stdin: %v", err)
	}
	if len(body) > maxStdin {
		return nil, fmt.Errorf("message on stdin is over %d bytes", maxStdin)
	}
	switch format {
	case "text":
		if !utf8.Valid(body) {
			return nil, errors.New("stdin is not UTF-8 text")
		}
		text := strings.TrimSuffix(string(body), "\n")
		return marshalText(strings.TrimSuffix(text, "\r"))
	case "lines":
		if !utf8.Valid(body) {
			return nil, errors.New("stdin is not UTF-8 text")
		}
		return marshalText(textLines(string(body)))
	}
	return readMessage(body)
}

// textLines splits s as Python's readlines() does on a file opened as
// text: at LF, CRLF or CR, each line keeping its end, written as LF.
func textLines(s string) []string {
	lines := []string{}
	for s != "" {
		i := strings.IndexAny(s, "\r\n")
		if i < 0 {
			lines = append(lines, s)
			break
		}
		lines = append(lines, s[:i]+"\n")
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			i++
		}
		s = s[i+1:]
	}
	return lines
}

// marshalText encodes v as compact JSON, leaving <, > and & as they are.
func marshalText(v any) (json.RawMessage, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// readMessage reads exactly one JSON document from body.
func readMessage(body []byte) (json.RawMessage, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, errors.New("no JSON message on stdin")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("stdin is not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("stdin holds more than one JSON document; publish one message at a time")
	}
	return raw, nil
}

// Errors of a publish whose outcome is known not to be a publish, and of
// one whose outcome is unknown.
var (
	errNotPublished   = errors.New("not published")
	errOutcomeUnknown = errors.New("outcome unknown")
	// errNotReplicated: published, but fewer replicas than
	// --redis-wait-replicas confirmed it in time.
	errNotReplicated = errors.New("not confirmed")
)

// newIdempotencyKey returns a random idempotency key.
func newIdempotencyKey() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// publishHTTP posts m to the hub's publish endpoint, with token as a
// bearer token unless it is empty, and m's idempotency key, and returns
// the id. Errors wrap errNotPublished or errOutcomeUnknown when the hub or
// the connection tells which.
func publishHTTP(ctx context.Context, hubURL, token string, m ssehub.Message) (string, error) {
	u, err := endpointURL(hubURL, "publish")
	if err != nil {
		return "", err
	}
	// Keep the message's bytes as given: no HTML escaping of <, > and &.
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), &body)
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", m.IdempotencyKey)
	for k, v := range bearerHeader(token) {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		msg := fmt.Sprintf("cannot reach the hub at %s: %v", hubURL, unwrapURLError(err))
		if hint := reachHint(hubURL, err); hint != "" {
			msg += "; " + hint
		}
		if neverSent(err) {
			return "", errors.New(msg)
		}
		// The request may have reached the hub.
		return "", fmt.Errorf("%w: no answer from the hub at %s: %v", errOutcomeUnknown, hubURL, unwrapURLError(err))
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var out struct {
		ID    string `json:"id"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(raw, &out); err != nil && resp.StatusCode == http.StatusOK {
		return "", fmt.Errorf("%s answered with something that is not JSON (%v): is it an ssehub hub's publish URL?", u, err)
	}
	if resp.StatusCode == http.StatusOK {
		return out.ID, nil
	}
	if hint := httpsHint(hubURL, resp.StatusCode, string(raw)); hint != "" {
		return "", fmt.Errorf("the hub at %s refused plain HTTP (%d); %s", hubURL, resp.StatusCode, hint)
	}
	if out.Error == "" {
		out.Error = http.StatusText(resp.StatusCode)
	}
	msg := fmt.Sprintf("the hub refused the message (%d): %s", resp.StatusCode, out.Error)
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		if token == "" {
			msg += "; give its publish token with --token-file or --token (or SSEHUB_PUBLISH_TOKEN)"
		}
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		msg += fmt.Sprintf("; %s is not a publish endpoint: give the hub's base URL, as in http://127.0.0.1:8080", u)
	case http.StatusServiceUnavailable:
		return "", fmt.Errorf("%w: the hub could not publish the message (%d): %s", errNotPublished, resp.StatusCode, out.Error)
	case http.StatusGatewayTimeout:
		return "", fmt.Errorf("%w: the hub could not tell whether the message was published (%d): %s", errOutcomeUnknown, resp.StatusCode, out.Error)
	}
	return "", errors.New(msg)
}

func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
