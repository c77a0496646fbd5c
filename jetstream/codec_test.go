package jetstream

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzDecode feeds Decode arbitrary subjects, header blocks (as they arrive
// on the wire, parsed by the NATS client) and payloads. It must never panic,
// and whatever it accepts must be a well-formed event: its subject is the
// one Encode would build for its type and key, it has an ID and a positive
// outbox seq, and no reserved header leaks into its headers.
func FuzzDecode(f *testing.F) {
	l := Layout{Prefix: "boxcar", Partitions: 64}
	k1 := "boxcar.main." + strconv.Itoa(Partition("k1", 64)) + ".order.placed.k1"
	odd := "boxcar.main." + strconv.Itoa(Partition("k. *>é", 64)) + ".order.placed.~ay5iICo-w6k"
	good := "NATS/1.0\r\nNats-Msg-Id: 01HZX\r\nBoxcar-Type: order.placed\r\nBoxcar-Key: k1\r\nBoxcar-Seq: 12\r\nBoxcar-Time: 1700000000000000000\r\nTenant: acme\r\n\r\n"
	f.Add(k1, good, []byte("payload"))
	f.Add(odd, strings.Replace(good, "Boxcar-Key: k1", "Boxcar-Key: k. *>é", 1), []byte{})
	f.Add(k1, "", []byte("no headers"))
	f.Add("boxcar.order", good, []byte(nil))
	f.Add("boxcar..k1", good, []byte("empty type token"))
	f.Add("other.order.placed.k1", good, []byte("foreign prefix"))
	f.Add("boxcar.order.placed.~~~", good, []byte("bad key token"))
	f.Add(k1, strings.Replace(good, "Boxcar-Seq: 12", "Boxcar-Seq: -1", 1), []byte("x"))
	f.Add(k1, strings.Replace(good, "Boxcar-Seq: 12", "Boxcar-Seq: 99999999999999999999", 1), []byte("x"))
	f.Add(k1, strings.Replace(good, "Boxcar-Time: 1700000000000000000", "Boxcar-Time: soon", 1), []byte("x"))
	f.Add(k1, strings.Replace(good, "Boxcar-Type: order.placed", "Boxcar-Type: order.paid", 1), []byte("x"))
	f.Add(k1, "NATS/1.0 503\r\n\r\n", []byte("status line"))
	f.Add(k1, "NATS/1.0\r\nNats-Msg-Id:\r\nbroken line without colon\r\n\r\n", []byte("x"))
	f.Fuzz(func(t *testing.T, subject, rawHeader string, data []byte) {
		var h nats.Header
		if rawHeader != "" {
			h, _ = nats.DecodeHeadersMsg([]byte(rawHeader))
		}
		in, err := Decode(l, subject, h, data)
		if err != nil {
			return
		}
		if got := l.Subject(in.Origin, in.Type, in.Key); got != subject {
			t.Fatalf("accepted subject %q as type %q key %q, whose subject is %q", subject, in.Type, in.Key, got)
		}
		if in.ID == "" || in.Seq <= 0 {
			t.Fatalf("accepted a message with ID %q and seq %d", in.ID, in.Seq)
		}
		for k := range in.Headers {
			if lk := strings.ToLower(k); strings.HasPrefix(lk, "boxcar-") || strings.HasPrefix(lk, "nats-") {
				t.Fatalf("reserved header %q in the event's headers", k)
			}
		}
		if !bytes.Equal(in.Data, data) {
			t.Fatal("data changed")
		}
	})
}

// What Encode builds, Decode reads back as it was.
func TestEncodeDecodeRoundTrip(t *testing.T) {
	t.Parallel()
	o := &Outgoing{Seq: 42, ID: "01HZX", Type: "user.signed_up", Key: "user 42.eu *>", Headers: map[string]string{"Tenant": "acme"}, Data: []byte("{}"), CreatedNS: 1700}
	l := Layout{Prefix: "boxcar", Partitions: 64}
	m := Encode(l, "billing", o, "01HZW")
	if got := m.Header.Get("Nats-Expected-Last-Msg-Id"); got != "01HZW" {
		t.Fatalf("chain header %q, want the previous ID", got)
	}
	in, err := Decode(l, m.Subject, m.Header, m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if in.Origin != "billing" || in.Partition != Partition(o.Key, 64) || in.ID != o.ID || in.Type != o.Type || in.Key != o.Key || in.Seq != o.Seq || in.CreatedNS != o.CreatedNS ||
		len(in.Headers) != 1 || in.Headers["Tenant"] != "acme" || string(in.Data) != "{}" {
		t.Fatalf("decoded %+v from %+v", in, o)
	}
}

// The reserves hold for the largest event PublishTx accepts: the longest
// type, a key that must be encoded in its subject, the longest names, a
// schema version, a redriven copy's headers and the chain's, and a dead
// letter with the longest error and a history of errors JSON escapes six
// times over. The message fits HeaderReserve beside the event; its dead
// letter, with DeadLetterReserve more, keeps the whole payload.
func TestReservesHoldForTheLargestEvent(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("n", maxTokenLen)
	own := map[string]string{"Tenant": "acme", "Trace": strings.Repeat("x", 300)}
	data := bytes.Repeat([]byte{'d'}, 64<<10)
	size := len(data)
	for k, v := range own {
		size += len(k) + len(v) + 4
	}
	headers := map[string]string{
		HeaderSchemaVersion: strconv.Itoa(1<<31 - 1), HeaderEventID: strings.Repeat("I", maxIDLen),
		HeaderRedriveFor: name, HeaderRelease: strings.Repeat("R", maxIDLen), HeaderReleaseLast: "1",
	}
	for k, v := range own {
		headers[k] = v
	}
	o := &Outgoing{Seq: 1<<63 - 1, ID: strings.Repeat("A", maxIDLen), Type: strings.Repeat("t", MaxTypeLen),
		Key: strings.Repeat("é", MaxKeyLen/2), Headers: headers, Data: data, CreatedNS: -1 << 63}
	// What PublishTx checks against the max payload fits what Open and the
	// embedded server size it by.
	if got := HeaderBlockSize(o.Type, o.Key, own) + len(data); got > size+HeaderReserve {
		t.Fatalf("PublishTx counts %d bytes, over the event's %d and HeaderReserve %d", got, size, HeaderReserve)
	}
	m := Encode(Layout{Prefix: name, Partitions: 1 << 30}, name, o, strings.Repeat("P", maxIDLen))
	if got := WireHeaderSize(m.Header) + len(m.Data); got > size+HeaderReserve {
		t.Fatalf("the message is %d bytes, over the event's %d and HeaderReserve %d", got, size, HeaderReserve)
	}
	hostile := strings.Repeat("<\x01", 2*maxHistoryText)
	var hist []AttemptError
	for i := range 3 * maxHistory {
		hist = append(hist, AttemptError{Attempt: i + 1, Error: hostile, AtNS: -1 << 63})
	}
	dl := &DeadLetter{Subscriber: name, Reason: "malformed", Err: errors.New(hostile + hostile), Attempts: 1<<31 - 1,
		History: hist, Subject: m.Subject, StreamSeq: 1<<64 - 1, Header: m.Header, Data: m.Data, Type: o.Type, Key: o.Key}
	maxPayload := size + HeaderReserve + DeadLetterReserve
	letter := EncodeDeadLetter(name, dl, maxPayload)
	if letter.Header.Get(HeaderTruncated) != "" || len(letter.Data) != len(data) {
		t.Fatalf("the dead letter kept %d of %d bytes", len(letter.Data), len(data))
	}
	if got := WireHeaderSize(letter.Header) + len(letter.Data); got > maxPayload {
		t.Fatalf("the dead letter is %d bytes, over the max payload %d", got, maxPayload)
	}
	h := letter.Header.Get(HeaderErrors)
	if len(h) > maxHistoryHeader {
		t.Fatalf("the history header is %d bytes, over %d", len(h), maxHistoryHeader)
	}
	info, err := DecodeDeadLetter(Layout{Prefix: name, Partitions: 1 << 30}, letter.Header, letter.Data)
	if err != nil || len(info.History) == 0 || info.History[len(info.History)-1].Attempt != len(hist) {
		t.Fatalf("the history read back: %d attempts, %v; want the latest kept", len(info.History), err)
	}
}
