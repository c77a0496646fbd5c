package jetstream

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The wire codec: how an event looks in the stream, how a subscriber reads
// it back, and the dead-letter envelope. Everything Boxcar writes into or
// reads from a message is here, with one set of header names.
//
// An event message: subject prefix.origin.partition.type.encodedKey (see
// Layout, in subject.go: the one place the layout is decided), the payload
// as data, and these headers:
//
//	Nats-Msg-Id                the event ID (JetStream's duplicate window)
//	Nats-Expected-Last-Msg-Id  the previous event's ID (the relay's chain,
//	                           when the relay is the stream's only writer)
//	Nats-Batch-*, Nats-Expected-Last-Subject-Sequence(-Subject)
//	                           the chain of an instance sharing the stream
//	                           (see BatchPublisher)
//	Boxcar-Seq                 outbox seq, decimal
//	Boxcar-Type                event type
//	Boxcar-Key                 raw key, as NATS carries header values (see HeaderForm)
//	Boxcar-Time                creation time, unix ns, decimal
//	...                        the event's own headers
//
// A dead letter: the failed message's headers (without Nats-*), its data,
// and Boxcar-Id, Boxcar-Dead-Reason, Boxcar-Error, Boxcar-Attempts,
// Boxcar-Subscriber, Boxcar-Stream-Seq, Boxcar-Subject, on the subject
// dlqPrefix.subscriber.type.encodedKey (dlqPrefix.subscriber.malformed when
// the message was not a well-formed event).

// Header names Boxcar sets. Event headers may not use the Boxcar- or Nats-
// prefixes.
const (
	HeaderSeq           = "Boxcar-Seq"            // outbox seq, decimal
	HeaderType          = "Boxcar-Type"           // event type
	HeaderKey           = "Boxcar-Key"            // raw key (the subject carries it encoded)
	HeaderTime          = "Boxcar-Time"           // commit-side creation time, unix ns, decimal
	HeaderSchemaVersion = "Boxcar-Schema-Version" // the version of the type's schema the payload matched, if any
	HeaderEventID       = "Boxcar-Id"             // the event ID where Nats-Msg-Id is the copy's own (dead letters, redriven copies)
	HeaderRedriveFor    = "Boxcar-Redrive-For"    // redriven copies: the only subscriber that handles it
	HeaderRelease       = "Boxcar-Release"        // redriven copies: the release of a parked key they belong to
	HeaderReleaseLast   = "Boxcar-Release-Last"   // redriven copies: "1" on the last copy of a release round
	HeaderErrors        = "Boxcar-Errors"         // dead letters: JSON of the last attempts, [{attempt, error, at_ns}]

	HeaderError          = "Boxcar-Error"           // dead letters: the last error
	HeaderAttempts       = "Boxcar-Attempts"        // dead letters: attempts made
	HeaderSubscr         = "Boxcar-Subscriber"      // dead letters: the subscriber that gave up
	HeaderOrigSeq        = "Boxcar-Stream-Seq"      // dead letters: sequence in the event stream
	HeaderOrigSubj       = "Boxcar-Subject"         // dead letters: subject in the event stream
	HeaderReason         = "Boxcar-Dead-Reason"     // dead letters: failed, permanent, schema or malformed
	HeaderHeadersDropped = "Boxcar-Headers-Dropped" // dead letters: copied headers dropped to fit
	HeaderTruncated      = "Boxcar-Truncated"       // dead letters: original data size, when cut to fit
)

// MaxHeaderBlock is the largest header block JetStream stores: it refuses a
// message with a larger one (err_code 10097).
const MaxHeaderBlock = math.MaxUint16

// maxIDLen and maxNumLen bound the values Encode sets: a ULID, a decimal
// int64.
const (
	maxIDLen  = 26
	maxNumLen = 20
)

// headerLine is the wire size of one header "name: value\r\n" but the value.
func headerLine(name string) int { return len(name) + len(": \r\n") }

// boxcarHeaderBlock is the wire size of the header block Encode builds for
// an event without headers of its own, at its longest ("NATS/1.0", Boxcar's
// headers and the chain's, the blank line), but for the type and key.
var boxcarHeaderBlock = len("NATS/1.0\r\n\r\n") +
	headerLine(HeaderSeq) + maxNumLen + headerLine(HeaderType) + headerLine(HeaderKey) +
	headerLine(HeaderTime) + maxNumLen +
	headerLine(jetstream.MsgIDHeader) + maxIDLen + max(headerLine(jetstream.ExpectedLastMsgIDHeader)+maxIDLen, batchChainHeaders)

// batchChainHeaders is the most BatchPublisher adds to a message: the
// batch's ID, sequence and commit, and the subtree chain's expectation.
var batchChainHeaders = headerLine(headerBatchID) + maxBatchIDLen + headerLine(headerBatchSeq) + maxNumLen +
	headerLine(headerBatchCommit) + 1 + headerLine(jetstream.ExpectedLastSubjSeqHeader) + maxNumLen +
	headerLine(jetstream.ExpectedLastSubjSeqSubjHeader) + 64 + len(".") + 64 + len(".>")

// HeaderReserve is the most Encode adds to an event's own headers and data,
// whatever its type and key (MaxTypeLen, MaxKeyLen), with the schema version
// PublishTx may add and the headers of a redriven copy: what a server's max
// payload must leave room for beside them.
var HeaderReserve = boxcarHeaderBlock + MaxTypeLen + MaxKeyLen + headerLine(HeaderSchemaVersion) + maxNumLen +
	headerLine(HeaderEventID) + maxIDLen + headerLine(HeaderRedriveFor) + maxTokenLen +
	headerLine(HeaderRelease) + maxIDLen + headerLine(HeaderReleaseLast) + 1

// DeadLetterReserve is the most EncodeDeadLetter adds to an event as the
// stream stored it, and the room it keeps beside the data: with this much
// beside HeaderReserve, the dead letter of any event PublishTx accepts keeps
// its whole payload, and can be redriven.
var DeadLetterReserve = headerLine(HeaderReason) + maxReasonLen + headerLine(HeaderError) + maxErrorText +
	headerLine(HeaderErrors) + maxHistoryHeader + headerLine(HeaderAttempts) + maxNumLen +
	headerLine(HeaderSubscr) + maxTokenLen + headerLine(HeaderOrigSeq) + maxNumLen +
	headerLine(HeaderOrigSubj) + maxSubjectLen + headerLine(HeaderEventID) + maxIDLen +
	headerLine(jetstream.MsgIDHeader) + maxTokenLen + len("-") + maxNumLen +
	headerLine(HeaderTruncated) + maxNumLen + headerLine(HeaderHeadersDropped) + maxNumLen + dlqDataMargin

// maxTokenLen is the longest name ValidateToken accepts (a subscriber, a
// prefix, an instance); maxReasonLen the longest dead-letter reason;
// maxSubjectLen the longest subject Layout.Subject builds.
const (
	maxTokenLen   = 64
	maxReasonLen  = len("malformed")
	maxSubjectLen = maxTokenLen + len(".") + maxTokenLen + len(".") + maxNumLen + len(".") + MaxTypeLen + len(".") +
		len(string(encodedMark)) + (MaxKeyLen*8+5)/6 // base64.RawURLEncoding of the longest key
)

// HeaderBlockSize is the largest wire size of the header block Encode builds
// for an event of typ and key with headers (NATS trims values, so the real
// block can only be shorter). JetStream refuses a message whose block is
// over MaxHeaderBlock; the server, one whose block plus data is over its max
// payload.
func HeaderBlockSize(typ, key string, headers map[string]string) int {
	n := boxcarHeaderBlock + len(typ) + len(key) + headerLine(HeaderSchemaVersion) + maxNumLen
	for k, v := range headers {
		n += len(k) + len(v) + len(": \r\n")
	}
	return n
}

// PublishError is the failure of one event's publish, by its outbox seq.
type PublishError struct {
	Seq int64
	Err error
}

func (e *PublishError) Error() string { return fmt.Sprintf("publish seq %d: %v", e.Seq, e.Err) }
func (e *PublishError) Unwrap() error { return e.Err }

// Server error codes of refusals that no retry can cure: the message itself
// is over a limit.
const (
	errCodeMessageTooLarge = 10054 // JSStreamMessageExceedsMaximumErr
	errCodeHeaderTooLarge  = 10097 // JSStreamHeaderExceedsMaximumErr
)

// IsPermanent reports whether err is a refusal of the message itself that
// publishing it again cannot change: larger than the server's max payload or
// the stream's limits, a header block JetStream cannot store, a subject or a
// header nats.go refuses to send, or an event CheckOutgoing refuses.
// Timeouts, a full store, a missing stream and the chain's refusals are not.
func IsPermanent(err error) bool {
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadHeaderMsg) || errors.Is(err, nats.ErrBadSubject) {
		return true
	}
	var outErr *OutgoingError
	if errors.As(err, &outErr) {
		return true
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeMessageTooLarge, errCodeHeaderTooLarge:
			return true
		}
	}
	return false
}

// Outgoing is one outbox event on its way into the stream.
type Outgoing struct {
	Seq       int64
	ID        string
	Type      string
	Key       string
	Headers   map[string]string
	Data      []byte
	CreatedNS int64
}

// OutgoingError is why an outbox event cannot go into the stream as it is:
// its row holds what PublishTx never writes (the row was written or edited by
// hand, bypassing it). Sending it again cannot change that.
type OutgoingError struct {
	// Field is the outbox column at fault: "id", "type", "key" or "headers"
	// from CheckOutgoing; the relay uses "headers" and "created_ns" too, for
	// values it cannot decode.
	Field string
	Err   error // names the field and the rule
}

func (e *OutgoingError) Error() string { return e.Err.Error() }
func (e *OutgoingError) Unwrap() error { return e.Err }

// CheckOutgoing reports what keeps o from going into the stream as it is
// (an *OutgoingError), nil if nothing does. Every row PublishTx writes
// passes: its type and key follow ValidateType and ValidateKey and its
// headers ValidateHeader, but for Boxcar's own headers (a schema version,
// a redriven copy's). A row edited by hand may not: a type that is not a
// subject token (nats.go refuses a subject with a space; a subscriber could
// not read back one with a wildcard), a header JetStream would act on
// (Nats-Expected-Stream and the like: the server refuses the message, or
// worse, obeys it), one Encode sets itself from the row's columns, or one
// that would not arrive as it is. Such an event is refused rather than
// sent changed: the relay sets its row aside, and later events go on.
func CheckOutgoing(o *Outgoing) error {
	// The ID is the message's Nats-Msg-Id and the next one's chain link.
	if o.ID == "" || HeaderForm(o.ID) != o.ID {
		return &OutgoingError{Field: "id", Err: fmt.Errorf("event ID %q is empty or does not survive a NATS header as it is", o.ID)}
	}
	if err := ValidateType(o.Type); err != nil {
		return &OutgoingError{Field: "type", Err: err}
	}
	if err := ValidateKey(o.Key); err != nil {
		return &OutgoingError{Field: "key", Err: err}
	}
	for k, v := range o.Headers {
		var err error
		switch {
		case hasPrefixFold(k, "nats-"):
			err = fmt.Errorf("header %q: Nats- headers are JetStream's, and the relay sets those it sends", k)
		case encodeSets(k):
			err = fmt.Errorf("header %q: Boxcar sets it from the outbox row's columns", k)
		case k == "":
			err = errors.New("empty header name")
		default:
			err = checkHeaderText(k, v)
		}
		if err != nil {
			return &OutgoingError{Field: "headers", Err: err}
		}
	}
	return nil
}

// encodeSets reports whether Encode sets header k from the event's own
// fields, over any value the event's headers have for it.
func encodeSets(k string) bool {
	for _, h := range [...]string{HeaderSeq, HeaderType, HeaderKey, HeaderTime} {
		if strings.EqualFold(k, h) {
			return true
		}
	}
	return false
}

// Encode builds the stream message of o, published by origin. prevID is the
// ID of the event published just before it ("" for none): the server
// refuses the message unless that is the stream's last message ID.
func Encode(l Layout, origin string, o *Outgoing, prevID string) *nats.Msg {
	// The header map is sized once, and Boxcar's own names, already in
	// canonical form, are stored directly; Set canonicalizes each name.
	h := make(nats.Header, len(o.Headers)+6)
	for k, v := range o.Headers {
		h.Set(k, v)
	}
	h[HeaderSeq] = []string{strconv.FormatInt(o.Seq, 10)}
	h[HeaderType] = []string{o.Type}
	h[HeaderKey] = []string{o.Key}
	h[HeaderTime] = []string{strconv.FormatInt(o.CreatedNS, 10)}
	h[jetstream.MsgIDHeader] = []string{o.ID}
	if prevID != "" {
		h[jetstream.ExpectedLastMsgIDHeader] = []string{prevID}
	}
	return &nats.Msg{Subject: l.Subject(origin, o.Type, o.Key), Header: h, Data: o.Data}
}

// Incoming is an event decoded from a stream message.
type Incoming struct {
	ID        string
	Type      string
	Key       string
	Origin    string            // the instance that published it
	Partition int               // the key's partition
	Headers   map[string]string // the event's own headers, nil if none
	Data      []byte
	Seq       int64 // outbox seq
	CreatedNS int64
	// SchemaVersion is the version of the type's schema the payload matched
	// at publish (0: none, or not a positive integer).
	SchemaVersion int
	// RedriveFor names the subscriber a redriven copy is for (the others
	// skip it); Release and ReleaseLast mark a release of a parked key.
	RedriveFor  string
	Release     string
	ReleaseLast bool
}

// Decode reads an event message. An error means the message is not a
// well-formed Boxcar event (a foreign or hand-made message): the subject
// must be one Encode builds, and the headers must agree with it.
func Decode(l Layout, subject string, h nats.Header, data []byte) (Incoming, error) {
	in := Incoming{Data: data}
	if h == nil {
		return in, errors.New("no headers: not published by a Boxcar relay")
	}
	ps, err := l.Parse(subject)
	if err != nil {
		return in, err
	}
	typ, key := ps.Type, ps.Key
	in.Origin, in.Partition = ps.Origin, ps.Partition
	in.ID = h.Get(jetstream.MsgIDHeader)
	if in.ID == "" {
		return in, fmt.Errorf("header %s is missing", jetstream.MsgIDHeader)
	}
	if id := h.Get(HeaderEventID); id != "" {
		in.ID = id // a redriven copy: its message ID is its own
	}
	in.RedriveFor, in.Release, in.ReleaseLast = h.Get(HeaderRedriveFor), h.Get(HeaderRelease), h.Get(HeaderReleaseLast) == "1"
	if got := h.Get(HeaderType); got != typ {
		return in, fmt.Errorf("header %s %q does not match the subject's type %q", HeaderType, got, typ)
	}
	// The subject carries the key exactly; the header as NATS carries
	// header values (a key " 1" arrives as "1").
	if got := h.Get(HeaderKey); got != HeaderForm(key) {
		return in, fmt.Errorf("header %s %q does not match the subject's key %q", HeaderKey, got, key)
	}
	in.Type, in.Key = typ, key
	if in.Seq, err = strconv.ParseInt(h.Get(HeaderSeq), 10, 64); err != nil || in.Seq <= 0 {
		return in, fmt.Errorf("header %s %q is not a positive integer", HeaderSeq, h.Get(HeaderSeq))
	}
	if in.CreatedNS, err = strconv.ParseInt(h.Get(HeaderTime), 10, 64); err != nil {
		return in, fmt.Errorf("header %s %q is not an integer", HeaderTime, h.Get(HeaderTime))
	}
	if v, err := strconv.Atoi(h.Get(HeaderSchemaVersion)); err == nil && v > 0 {
		in.SchemaVersion = v
	}
	for k, vs := range h {
		if reservedHeader(k) || len(vs) == 0 {
			continue
		}
		if in.Headers == nil {
			in.Headers = make(map[string]string)
		}
		in.Headers[k] = vs[0]
	}
	return in, nil
}

// OutboxSeqOf reads the outbox seq and event ID a stream message claims,
// reporting false when it claims none (not a Boxcar event).
func OutboxSeqOf(h nats.Header) (seq int64, id string, ok bool) {
	seq, err := strconv.ParseInt(h.Get(HeaderSeq), 10, 64)
	id = h.Get(jetstream.MsgIDHeader)
	if err != nil || seq <= 0 || id == "" {
		return 0, "", false
	}
	return seq, id, true
}

func reservedHeader(k string) bool {
	return hasPrefixFold(k, "boxcar-") || hasPrefixFold(k, "nats-")
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// headerNameForbidden are the printable ASCII characters nats.go refuses in
// a header name.
const headerNameForbidden = `"()/,:;<=>?@[\]{}`

// ValidateHeader checks one event header: it must arrive as it was sent.
func ValidateHeader(k, v string) error {
	if k == "" {
		return fmt.Errorf("empty header name")
	}
	if reservedHeader(k) {
		return fmt.Errorf("header %q: names starting with Boxcar- or Nats- are reserved", k)
	}
	return checkHeaderText(k, v)
}

// checkHeaderText checks that header k: v, a non-empty name, arrives as it
// is sent.
func checkHeaderText(k, v string) error {
	// NATS (ADR-4, and nats.go more strictly) allows printable ASCII
	// without these in a header name. A name it refuses would make the
	// relay's publish of the event fail at every retry, and hold every later
	// event behind it: refuse it here, before it is written.
	for i := 0; i < len(k); i++ {
		if c := k[i]; c <= ' ' || c >= 0x7f || strings.IndexByte(headerNameForbidden, c) >= 0 {
			return fmt.Errorf("header name %q: use printable ASCII without spaces or any of %s", k, headerNameForbidden)
		}
	}
	if strings.ContainsAny(v, "\r\n") {
		return fmt.Errorf("header %q: value contains CR or LF", k)
	}
	// The value must arrive as it was sent: the NATS header block drops
	// spaces and tabs around a value, and the outbox keeps headers as JSON,
	// which turns invalid UTF-8 into U+FFFD.
	if v != strings.Trim(v, " \t") {
		return fmt.Errorf("header %q: value starts or ends with a space or tab, which NATS headers drop", k)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("header %q: value is not valid UTF-8", k)
	}
	return nil
}

// AttemptError is one failed attempt of an event, in a dead letter's
// history.
type AttemptError struct {
	Attempt int    `json:"attempt"`
	Error   string `json:"error"`
	AtNS    int64  `json:"at_ns"`
}

// maxHistory bounds the attempts a dead letter's history keeps (the last
// ones), and maxHistoryText each one's error text.
const (
	maxHistory     = 10
	maxHistoryText = 256
)

// DeadLetter is what a subscriber knows of an event it gives up on.
type DeadLetter struct {
	Subscriber string
	Reason     string // "failed", "permanent", "schema", "parked" or "malformed"
	Err        error  // the last error
	Attempts   int
	History    []AttemptError // the attempts' errors, oldest first
	// The failed message as it was in the event stream.
	Subject   string
	StreamSeq uint64
	Header    nats.Header
	Data      []byte
	// Type and Key of the event; empty for a malformed message.
	Type, Key string
}

// dlqMaxHeader bounds the header block of a dead letter: JetStream refuses
// blocks over 64 KiB.
const dlqMaxHeader = 60 << 10

// maxErrorText bounds the error text a dead letter carries;
// maxHistoryHeader its history header; dlqDataMargin is the room it keeps
// beside its headers and data under the max payload.
const (
	maxErrorText     = 1024
	maxHistoryHeader = 4 << 10
	dlqDataMargin    = 1024
)

// EncodeDeadLetter builds the dead-letter message of dl, to fit maxPayload
// (the server's limit on headers plus data). The copy's message ID makes a
// repeat within the duplicate window harmless.
func EncodeDeadLetter(dlqPrefix string, dl *DeadLetter, maxPayload int) *nats.Msg {
	subject := dlqPrefix + "." + dl.Subscriber + ".malformed"
	if dl.Type != "" {
		subject = dlqPrefix + "." + dl.Subscriber + "." + dl.Type + "." + EncodeKey(dl.Key)
	}
	m := nats.NewMsg(subject)
	for k, vs := range dl.Header {
		if hasPrefixFold(k, "nats-") {
			continue
		}
		for _, v := range vs {
			m.Header.Add(k, v)
		}
	}
	if id := dl.Header.Get(jetstream.MsgIDHeader); id != "" {
		m.Header.Set(HeaderEventID, id)
	}
	msgErr := headerNewlines.Replace(dl.Err.Error())
	if len(msgErr) > maxErrorText {
		msgErr = msgErr[:maxErrorText]
	}
	m.Header.Set(HeaderReason, dl.Reason)
	m.Header.Set(HeaderError, msgErr)
	if hist := historyHeader(dl.History); hist != "" {
		m.Header.Set(HeaderErrors, hist)
	}
	m.Header.Set(HeaderAttempts, strconv.Itoa(dl.Attempts))
	m.Header.Set(HeaderSubscr, dl.Subscriber)
	m.Header.Set(HeaderOrigSeq, strconv.FormatUint(dl.StreamSeq, 10))
	m.Header.Set(HeaderOrigSubj, dl.Subject)
	m.Header.Set(jetstream.MsgIDHeader, dl.Subscriber+"-"+strconv.FormatUint(dl.StreamSeq, 10))
	m.Data = dl.Data
	// A foreign message may fill the server's limits on its own, and the
	// copy adds headers: a copy over a limit would be refused at every
	// retry, and the key would never move on. JetStream refuses header
	// blocks over 64 KiB: past dlqMaxHeader, drop the copied headers and
	// keep Boxcar's. The max payload counts headers and data: keep as much
	// of the data as fits beside the headers.
	if WireHeaderSize(m.Header) > dlqMaxHeader {
		kept := nats.Header{}
		for _, k := range []string{HeaderReason, HeaderError, HeaderAttempts, HeaderSubscr,
			HeaderOrigSeq, HeaderOrigSubj, jetstream.MsgIDHeader} {
			kept[k] = m.Header[k]
		}
		kept.Set(HeaderHeadersDropped, strconv.Itoa(len(m.Header)-len(kept)))
		m.Header = kept
	}
	if limit := maxPayload - WireHeaderSize(m.Header) - dlqDataMargin; len(m.Data) > limit {
		m.Header.Set(HeaderTruncated, strconv.Itoa(len(dl.Data)))
		m.Data = m.Data[:max(limit-64, 0)] // 64: room for the header just set
	}
	return m
}

// historyHeader encodes the last maxHistory attempts, each error cut to
// maxHistoryText, as JSON.
func historyHeader(h []AttemptError) string {
	if len(h) == 0 {
		return ""
	}
	h = slices.Clone(h[max(len(h)-maxHistory, 0):])
	for i := range h {
		e := headerNewlines.Replace(h[i].Error)
		if len(e) > maxHistoryText {
			e = e[:maxHistoryText]
		}
		h[i].Error = strings.ToValidUTF8(e, "?")
	}
	for {
		b, _ := json.Marshal(h) // plain structs cannot fail
		// JSON escapes may make an error text up to six times its length:
		// keep the latest attempts that fit (one always does).
		if len(b) <= maxHistoryHeader || len(h) == 1 {
			return string(b)
		}
		h = h[1:]
	}
}

// DeadLetterInfo is a dead letter read back from the dead-letter stream.
type DeadLetterInfo struct {
	Subscriber string
	Reason     string
	Error      string
	History    []AttemptError
	Attempts   int
	// The event, as far as the letter holds it; Type is empty for a
	// malformed message.
	EventID   string
	Type      string
	Key       string
	Headers   map[string]string // the event's own
	Data      []byte
	OutboxSeq int64
	CreatedNS int64
	// SchemaVersion as the event carried it.
	SchemaVersion int
	// StreamSeq and Subject in the event stream.
	StreamSeq uint64
	Subject   string
	// Truncated and HeadersDropped say the letter lost part of the event
	// to fit the server's limits: it cannot be redriven as it was.
	Truncated      bool
	HeadersDropped bool
}

// DecodeDeadLetter reads a message of the dead-letter stream; l is the
// event stream's layout. A letter written before the current layout names
// its event's subject in layout 1: the type header tells which.
func DecodeDeadLetter(l Layout, h nats.Header, data []byte) (DeadLetterInfo, error) {
	if h == nil {
		return DeadLetterInfo{}, errors.New("no headers: not a Boxcar dead letter")
	}
	d := DeadLetterInfo{
		Subscriber:     h.Get(HeaderSubscr),
		Reason:         h.Get(HeaderReason),
		Error:          h.Get(HeaderError),
		EventID:        h.Get(HeaderEventID),
		Subject:        h.Get(HeaderOrigSubj),
		Data:           data,
		Truncated:      h.Get(HeaderTruncated) != "",
		HeadersDropped: h.Get(HeaderHeadersDropped) != "",
	}
	if d.Subscriber == "" || d.Reason == "" {
		return d, errors.New("not a Boxcar dead letter: no subscriber or reason")
	}
	d.Attempts, _ = strconv.Atoi(h.Get(HeaderAttempts))
	d.StreamSeq, _ = strconv.ParseUint(h.Get(HeaderOrigSeq), 10, 64)
	d.OutboxSeq, _ = strconv.ParseInt(h.Get(HeaderSeq), 10, 64)
	d.CreatedNS, _ = strconv.ParseInt(h.Get(HeaderTime), 10, 64)
	d.SchemaVersion, _ = strconv.Atoi(h.Get(HeaderSchemaVersion))
	if hist := h.Get(HeaderErrors); hist != "" {
		json.Unmarshal([]byte(hist), &d.History) // a broken history is only a history lost
	}
	if d.Reason != "malformed" {
		// The subject in the event stream tells the type and the key
		// exactly; the type header, which layout it is in.
		if ps, err := l.Parse(d.Subject); err == nil && ps.Type == h.Get(HeaderType) {
			d.Type, d.Key = ps.Type, ps.Key
		} else if typ, key, err := ParseLegacySubject(l.Prefix, d.Subject); err == nil && typ == h.Get(HeaderType) {
			d.Type, d.Key = typ, key
		}
	}
	for k, vs := range h {
		if reservedHeader(k) || len(vs) == 0 {
			continue
		}
		if d.Headers == nil {
			d.Headers = map[string]string{}
		}
		d.Headers[k] = vs[0]
	}
	return d, nil
}

// WireHeaderSize is the size of h's block on the wire ("NATS/1.0", one
// "name: value" line per value, a blank line).
func WireHeaderSize(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v)
		}
	}
	return n
}

// headerNewlines turns CR and LF into spaces, as nats.go does in header values.
var headerNewlines = strings.NewReplacer("\r", " ", "\n", " ")

// HeaderForm is how s arrives as a NATS header value: nats.go trims spaces,
// tabs, CR and LF around it and turns CR and LF inside it into spaces. A key
// may hold any of them: the subject carries it exactly, its Boxcar-Key
// header only in this form.
func HeaderForm(s string) string {
	return headerNewlines.Replace(textproto.TrimString(s))
}
