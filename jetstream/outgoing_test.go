package jetstream

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// CheckOutgoing passes every event PublishTx writes, Boxcar's own row
// headers included (a schema version, a redriven copy's), and refuses, by
// the column at fault, what a row edited by hand may hold that cannot be
// sent as it is. Its refusals, and nats.go's refusal of a subject, are
// permanent: the relay sets such a row aside.
func TestCheckOutgoing(t *testing.T) {
	good := Outgoing{Seq: 1, ID: "01HZY3J5N6W8X9Y0Z1A2B3C4D5", Type: "user.signed_up", Key: "user 7", Data: []byte("x"),
		Headers: map[string]string{"traceparent": "00-abc-01", HeaderSchemaVersion: "2", HeaderEventID: "01HZY3J5N6W8X9Y0Z1A2B3C4D6",
			HeaderRedriveFor: "ledger", HeaderRelease: "r1", HeaderReleaseLast: "1"}}
	if err := CheckOutgoing(&good); err != nil {
		t.Fatalf("an event PublishTx writes: %v", err)
	}
	for _, tc := range []struct {
		field, errText string
		edit           func(o *Outgoing)
	}{
		{"id", "event ID", func(o *Outgoing) { o.ID = "" }},
		{"id", "event ID", func(o *Outgoing) { o.ID = " 01HZY" }},
		{"type", `"order placed"`, func(o *Outgoing) { o.Type = "order placed" }},
		{"type", "order.*", func(o *Outgoing) { o.Type = "order.*" }},
		{"key", "empty", func(o *Outgoing) { o.Key = "" }},
		{"headers", "Nats-Expected-Stream", func(o *Outgoing) { o.Headers = map[string]string{"Nats-Expected-Stream": "ELSEWHERE"} }},
		{"headers", "nats-rollup", func(o *Outgoing) { o.Headers = map[string]string{"nats-rollup": "all"} }},
		{"headers", "Boxcar-Seq", func(o *Outgoing) { o.Headers = map[string]string{"Boxcar-Seq": "99"} }},
		{"headers", "boxcar-key", func(o *Outgoing) { o.Headers = map[string]string{"boxcar-key": "other"} }},
		{"headers", "a b", func(o *Outgoing) { o.Headers = map[string]string{"a b": "v"} }},
		{"headers", "space or tab", func(o *Outgoing) { o.Headers = map[string]string{"a": "v "} }},
		{"headers", "CR or LF", func(o *Outgoing) { o.Headers = map[string]string{"a": "v\r\nNats-Rollup: all"} }},
	} {
		t.Run(fmt.Sprintf("%s %s", tc.field, tc.errText), func(t *testing.T) {
			o := good
			tc.edit(&o)
			err := CheckOutgoing(&o)
			var oe *OutgoingError
			if !errors.As(err, &oe) || oe.Field != tc.field || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("CheckOutgoing: %v; want an *OutgoingError for %s naming %q", err, tc.field, tc.errText)
			}
			if !IsPermanent(&PublishError{Seq: o.Seq, Err: err}) {
				t.Fatal("not permanent: the relay would retry it for ever")
			}
		})
	}
	if !IsPermanent(fmt.Errorf("publish: %w", nats.ErrBadSubject)) {
		t.Fatal("nats.ErrBadSubject is not permanent: the relay would retry such a row for ever")
	}
}
