package ssehub_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/ssehub/ssehub"
)

// A Hub mounted on an existing mux. Here the publish goes through the mux
// as an HTTP request would, and a Go subscription receives the event.
func Example() {
	hub, err := ssehub.New(ssehub.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close(context.Background())

	mux := http.NewServeMux()
	mux.Handle("/sse", hub)     // GET: the event stream
	mux.Handle("/publish", hub) // POST: publish a JSON message
	mux.Handle("/healthz", hub)
	// http.ListenAndServe("127.0.0.1:8080", mux)

	ctx := context.Background()
	sub, err := hub.Subscribe(ctx, []string{"news"}, "")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()

	body := `{"channel": "news", "type": "headline", "data": {"title": "Hello"}}`
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/publish", strings.NewReader(body)))
	fmt.Println("publish:", rec.Code)

	e, err := sub.Next(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(e.Channel, e.Type, string(e.Data))
	// Output:
	// publish: 200
	// news headline {"title":"Hello"}
}

func ExampleHub_Publish() {
	hub, err := ssehub.New(ssehub.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close(context.Background())
	ctx := context.Background()

	// A publisher's own id is kept as given.
	id, err := hub.Publish(ctx, ssehub.Message{
		Channel: "orders",
		ID:      "order-42",
		Type:    "created",
		Data:    json.RawMessage(`{"total": 12.5}`),
	})
	fmt.Println(id, err)

	// Without one, the hub assigns ids that sort in publish order.
	first, _ := hub.Publish(ctx, ssehub.Message{Channel: "orders", Data: json.RawMessage(`1`)})
	second, _ := hub.Publish(ctx, ssehub.Message{Channel: "orders", Data: json.RawMessage(`2`)})
	fmt.Println(first < second)

	// Invalid messages are refused with a sentinel error.
	_, err = hub.Publish(ctx, ssehub.Message{Channel: "no spaces", Data: json.RawMessage(`1`)})
	fmt.Println(errors.Is(err, ssehub.ErrInvalidChannel))
	_, err = hub.Publish(ctx, ssehub.Message{Data: json.RawMessage(`{not json}`)})
	fmt.Println(errors.Is(err, ssehub.ErrInvalidData))
	// Output:
	// order-42 <nil>
	// true
	// true
	// true
}

func ExampleHub_Subscribe() {
	hub, err := ssehub.New(ssehub.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer hub.Close(context.Background())
	ctx := context.Background()

	var ids []string
	for _, n := range []string{"1", "2", "3"} {
		id, err := hub.Publish(ctx, ssehub.Message{Channel: "ticks", Data: json.RawMessage(n)})
		if err != nil {
			log.Fatal(err)
		}
		ids = append(ids, id)
	}

	// Resume after the first event: the retained events after it come
	// first, then live ones.
	sub, err := hub.Subscribe(ctx, []string{"ticks"}, ids[0])
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	for range 2 {
		e, err := sub.Next(ctx)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(e.Data))
	}
	// Output:
	// 2
	// 3
}

func ExampleNewEvent() {
	// Data that spans lines is written as one "data:" line per line.
	e := ssehub.NewEvent("news", "42", "update", []byte("first line\nsecond line"), 0, 1, time.Now())
	os.Stdout.Write(e.Frame())
	// Output:
	// id: 42
	// event: update
	// data: first line
	// data: second line
}
