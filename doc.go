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
// Fan-out never blocks a publisher: each subscriber has a bounded queue, and
// a subscriber that lets it fill is disconnected, to reconnect and resume.
// Each event is encoded once and the same bytes go to every subscriber.
//
// Hub, Subscription and MemoryBroker methods are safe for concurrent use,
// except that one Subscription's Next is meant for one goroutine at a time.
package ssehub
