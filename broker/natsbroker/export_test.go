package natsbroker

import "context"

// SeqOf returns the sequence number an id or position of b's stream
// stands for, so that tests can check ids, which are opaque.
func SeqOf(ctx context.Context, b *Broker, id string) (uint64, bool) {
	st, err := b.streams(ctx)
	if err != nil {
		return 0, false
	}
	return st.ids.decode(id)
}

// EventID returns the id b gives the event at seq.
func EventID(ctx context.Context, b *Broker, seq uint64) string {
	st, err := b.streams(ctx)
	if err != nil {
		return ""
	}
	return st.ids.event(seq)
}
