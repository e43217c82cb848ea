// Package ssehub is a server-sent events hub: back ends publish messages to
// named channels, and browsers (EventSource) or Go programs receive them as
// text/event-stream, with replay of missed events on reconnect.
//
// A Hub fans events out from a Broker to its local subscribers. The default
// broker, MemoryBroker, serves one process; broker/redisbroker lets several
// hub processes share channels and history through Redis.
//
//	hub, err := ssehub.New(ssehub.Config{})
//	...
//	mux.Handle("/sse", hub)      // GET: the event stream
//	mux.Handle("/publish", hub)  // POST: publish a JSON message
//	id, err := hub.Publish(ctx, ssehub.Message{Channel: "news", Data: json.RawMessage(`{"n":1}`)})
//
// Every event carries an id. A client that reconnects with Last-Event-ID
// first receives the retained events published after it, in order and once
// each, then live events; when that id is no longer known it receives an
// event of type ResetType instead, so it knows to fetch its state again.
//
// # How events flow
//
// Each event is encoded once (Event.Frame), and the same bytes go to every
// subscriber. A channel's recent events are held once, in a feed: a ring of
// shared events that is the MemoryBroker's history, or, for a broker that
// keeps its history elsewhere (Redis), a ring the hub fills as the broker
// delivers (Config.Backlog). Feeds are bounded in events and in bytes
// (MemoryConfig.HistoryBytes, Config.BacklogBytes), oldest events leaving
// first.
//
// A subscriber is a cursor per channel, not a queue: publishing an event
// appends it to its channel's feed and wakes the subscribers that wait, and
// each takes, when it is ready, everything between its cursors and the
// feeds' heads, merged in publish order. One method does that for every
// kind of subscriber (Subscription.Next, streams served by their handler,
// detached streams). Publishers never wait for a subscriber, and a slow one
// costs no memory of its own; one that falls so far behind that its feed
// has moved past its cursor goes on the way a reconnecting client would:
// from what the broker can still replay, or with a ResetType event.
//
// An HTTP stream writes what it takes as one write. Streams over HTTP/2 or
// TLS are written by their handler's goroutine; HTTP/1.x streams, with
// Config.Detach, are taken over from net/http and written by a small pool
// of writers, a few KB each while idle. A client that takes no data for
// Config.WriteTimeout is cut; until then its stream holds references to
// shared events, never copies. When the writers themselves run late (the
// hub's CPU, not a client, is the limit), publishing waits for them, a
// little, rather than letting every stream fall behind.
//
// Hub, Subscription and MemoryBroker methods are safe for concurrent use,
// except that one Subscription's Next is meant for one goroutine at a time.
package ssehub
