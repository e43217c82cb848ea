package natsbroker

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream settings the options do not cover.
const (
	// noHistoryKeep is how many events per channel the stream keeps when
	// history is off: the consumer still reads events from the stream, so
	// a few must stay there until every hub has read them.
	noHistoryKeep = 64
	// idsShare is the share of HistoryBytes the id index may take.
	idsShare = 8
	// idsPerSubject is how many positions the index keeps per publisher
	// id and channel: two tell a reused id from one used once.
	idsPerSubject = 2
	// eventsDescription starts the events stream's description, which
	// goes on with its id key.
	eventsDescription = "ssehub events"
)

// errConfig means an existing stream does not fit the broker.
var errConfig = errors.New("stream does not fit")

// streams returns what the broker knows of its streams, creating or
// updating them first when it has not done so yet.
func (b *Broker) streams(ctx context.Context) (*streamState, error) {
	if st := b.st.Load(); st != nil {
		return st, nil
	}
	b.ensureMu.Lock()
	defer b.ensureMu.Unlock()
	if st := b.st.Load(); st != nil {
		return st, nil
	}
	ctx, cancel := context.WithTimeout(ctx, b.pubWait)
	defer cancel()
	delay := minBackoff
	for {
		err := b.connected()
		if err == nil {
			actx, acancel := context.WithTimeout(ctx, 2*attemptTimeout)
			var st *streamState
			st, err = b.ensureStreams(actx)
			acancel()
			if err == nil {
				b.st.Store(st)
				return st, nil
			}
		}
		if !retryable(err) || ctx.Err() != nil {
			b.metrics.BrokerError()
			return nil, unavailable("stream "+b.stream, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// perSubject is the events stream's limit per subject: one more than the
// history size, so that a channel that lost events can be told from one
// that had exactly HistorySize events since a position (see lost).
func (b *Broker) perSubject() int64 {
	if b.size <= 0 {
		return noHistoryKeep
	}
	return int64(b.size) + 1
}

func (b *Broker) maxAge() time.Duration {
	if b.age < 0 {
		return 0
	}
	return b.age
}

// dupWindow returns the stream's deduplication window: the idempotency
// window, at most the age limit, as JetStream requires.
func (b *Broker) dupWindow() time.Duration {
	if age := b.maxAge(); age > 0 && age < b.keyWindow {
		return age
	}
	return b.keyWindow
}

// pickReplicas returns the replica count for a new stream: Options.Replicas
// when set, else 3 when the connection knows 3 servers or more of a
// cluster, else 1.
func (b *Broker) pickReplicas() int {
	if b.replicas > 0 {
		return b.replicas
	}
	if b.nc.ConnectedClusterName() != "" && len(b.nc.Servers()) >= 3 {
		return 3
	}
	return 1
}

func (b *Broker) eventsConfig(replicas int) jetstream.StreamConfig {
	maxBytes := b.maxBytes
	if maxBytes < 0 {
		maxBytes = -1
	}
	_, description := newIDKey(eventsDescription)
	return jetstream.StreamConfig{
		Name:              b.stream,
		Description:       description,
		Subjects:          []string{b.subject + ".*"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: b.perSubject(),
		MaxMsgs:           -1,
		MaxAge:            b.maxAge(),
		MaxBytes:          maxBytes,
		Duplicates:        b.dupWindow(),
		Replicas:          replicas,
	}
}

func (b *Broker) idsConfig(replicas int) jetstream.StreamConfig {
	maxBytes := b.maxBytes
	if maxBytes > 0 {
		maxBytes = max(maxBytes/idsShare, 1<<20)
	} else {
		maxBytes = -1
	}
	return jetstream.StreamConfig{
		Name:              b.idsStream,
		Description:       "ssehub: positions of publishers' event ids",
		Subjects:          []string{b.idsSubj + ".*"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: idsPerSubject,
		MaxMsgs:           -1,
		MaxAge:            b.maxAge(),
		MaxBytes:          maxBytes,
		Duplicates:        b.dupWindow(),
		Replicas:          replicas,
	}
}

// ensureStreams creates the events stream and the id index when they are
// missing, or brings their limits to the options.
func (b *Broker) ensureStreams(ctx context.Context) (*streamState, error) {
	replicas := b.pickReplicas()
	events, err := b.ensure(ctx, b.eventsConfig(replicas))
	if err != nil {
		return nil, err
	}
	if _, err := b.ensure(ctx, b.idsConfig(replicas)); err != nil {
		return nil, err
	}
	info := events.CachedInfo()
	key, err := idKeyOf(info.Config.Description)
	if err != nil {
		return nil, fmt.Errorf("%w: stream %s: %w", errConfig, b.stream, err)
	}
	codec, err := newIDCodec(key, info.Created)
	if err != nil {
		return nil, err
	}
	return &streamState{ids: codec, perSubject: info.Config.MaxMsgsPerSubject}, nil
}

// ensure creates the stream cfg describes, or updates an existing one
// whose limits differ, unless the broker keeps streams as they are.
func (b *Broker) ensure(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	s, err := b.js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = b.js.CreateStream(ctx, cfg)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			// Another hub created it meanwhile.
			s, err = b.js.Stream(ctx, cfg.Name)
		} else if err == nil {
			b.log.LogAttrs(ctx, slog.LevelInfo, "natsbroker: created the stream",
				slog.String("stream", cfg.Name), slog.Int("replicas", cfg.Replicas))
			return s, nil
		}
	}
	if err != nil {
		return nil, err
	}
	have := s.CachedInfo().Config
	if !slices.Equal(have.Subjects, cfg.Subjects) {
		return nil, fmt.Errorf("%w: stream %s takes subjects %q; the broker needs exactly %q", errConfig, cfg.Name, have.Subjects, cfg.Subjects)
	}
	if b.keep {
		return s, nil
	}
	want := have
	if _, err := idKeyOf(have.Description); err != nil && cfg.Name == b.stream {
		// A stream made without the broker has no id key: it gets one.
		// Two hubs doing so at once would give it two, one after the
		// other, so a stream for ssehub is best created by ssehub.
		want.Description = cfg.Description
	}
	want.MaxMsgsPerSubject, want.MaxAge, want.MaxBytes, want.MaxMsgs = cfg.MaxMsgsPerSubject, cfg.MaxAge, cfg.MaxBytes, cfg.MaxMsgs
	want.Discard, want.Duplicates, want.AllowDirect = cfg.Discard, cfg.Duplicates, false
	if b.replicas > 0 {
		want.Replicas = cfg.Replicas
	}
	if want.MaxMsgsPerSubject == have.MaxMsgsPerSubject && want.MaxAge == have.MaxAge && want.MaxBytes == have.MaxBytes &&
		want.MaxMsgs == have.MaxMsgs && want.Discard == have.Discard && want.Duplicates == have.Duplicates &&
		want.Replicas == have.Replicas && want.Description == have.Description && !have.AllowDirect {
		return s, nil
	}
	s, err = b.js.UpdateStream(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("update: %w", err)
	}
	b.log.LogAttrs(ctx, slog.LevelInfo, "natsbroker: updated the stream's limits",
		slog.String("stream", cfg.Name), slog.Int64("per_channel", want.MaxMsgsPerSubject),
		slog.Duration("max_age", want.MaxAge), slog.Int64("max_bytes", want.MaxBytes), slog.Int("replicas", want.Replicas))
	return s, nil
}

// hashKey returns 144 bits of SHA-256 of s in base64url: a subject token.
func hashKey(s string) string {
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:18])
}

// storedMsg is a message as the stream's leader returns it.
type storedMsg struct {
	Subject string    `json:"subject"`
	Seq     uint64    `json:"seq"`
	Header  []byte    `json:"hdrs,omitempty"`
	Data    []byte    `json:"data,omitempty"`
	Time    time.Time `json:"time"`
}

// msgGetRequest asks for a message by sequence number, for the first
// message on a subject at or after a sequence number, or for the last one
// on a subject.
type msgGetRequest struct {
	Seq     uint64 `json:"seq,omitempty"`
	NextFor string `json:"next_by_subj,omitempty"`
	LastFor string `json:"last_by_subj,omitempty"`
}

// getMsg asks the leader of stream for a message; nil means there is
// none. It does not use direct gets, which other replicas may answer from
// behind the leader.
func (b *Broker) getMsg(ctx context.Context, stream string, req msgGetRequest) (*storedMsg, error) {
	body, _ := json.Marshal(req)
	var m *storedMsg
	err := b.api(ctx, "$JS.API.STREAM.MSG.GET."+stream, body, func(data []byte) error {
		var out struct {
			Error   *jetstream.APIError `json:"error"`
			Message *storedMsg          `json:"message"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return fmt.Errorf("answer: %w", err)
		}
		switch {
		case out.Error != nil && out.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
			m = nil
		case out.Error != nil:
			return out.Error
		case out.Message == nil:
			return errors.New("empty answer")
		default:
			m = out.Message
		}
		return nil
	})
	if err != nil {
		return nil, unavailable("get message", err)
	}
	return m, nil
}

// api sends a request to the JetStream API and passes the answer to
// decode. It tries again while no server answers, or the stream has no
// leader (decode returns the API's error), until Options.PublishTimeout.
// It never shares a jetstream.Stream, whose Info is not safe for
// concurrent use.
func (b *Broker) api(ctx context.Context, subject string, req []byte, decode func([]byte) error) error {
	ctx, cancel := context.WithTimeout(ctx, b.pubWait)
	defer cancel()
	delay := minBackoff
	for {
		err := b.connected()
		if err == nil {
			actx, acancel := context.WithTimeout(ctx, attemptTimeout)
			var resp *nats.Msg
			resp, err = b.nc.RequestWithContext(actx, subject, req)
			acancel()
			if err == nil {
				err = decode(resp.Data)
			}
			if err == nil {
				return nil
			}
		}
		if !retryable(err) || ctx.Err() != nil {
			b.metrics.BrokerError()
			return err
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// header decodes a stored message's headers.
func (m *storedMsg) header() (nats.Header, error) {
	if len(m.Header) == 0 {
		return nil, nil
	}
	return nats.DecodeHeadersMsg(m.Header)
}
