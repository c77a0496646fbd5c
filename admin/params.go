package admin

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/boxcar-bus/boxcar"
)

// Limits of list parameters: limit is 1 to maxLimit, defaultLimit when
// absent (the library's own bounds).
const (
	defaultLimit = 100
	maxLimit     = 1000
	// maxWhyLen bounds a why, in bytes: it is logged and recorded.
	maxWhyLen = 1024
	// maxKeyLen is Event.Key's limit; maxTypeLen bounds a type filter.
	maxKeyLen  = 512
	maxTypeLen = 255
	maxIDLen   = 64
)

// deadLetterReasons are the reasons a dead letter can have (DeadLetter.Reason,
// and "unknown" for a message that is not a Boxcar letter).
var deadLetterReasons = []string{"failed", "permanent", "schema", "malformed", boxcar.DeadLetterReasonParked, "unknown"}

// queryOf parses r's query, refusing a malformed one, parameters other than
// allowed (a typo would silently widen a filter) and repeated ones.
func queryOf(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, invalidf("malformed query: %v", err)
	}
	for k, v := range q {
		if !slices.Contains(allowed, k) {
			return nil, invalidf("unknown query parameter %q: use %s", k, strings.Join(allowed, ", "))
		}
		if len(v) > 1 {
			return nil, invalidf("query parameter %q is given %d times: give it once", k, len(v))
		}
	}
	return q, nil
}

// positiveSeq parses a sequence that must be a positive integer.
func positiveSeq(what, s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, invalidf("%s %q: use a positive integer", what, s)
	}
	return n, nil
}

// afterParam parses a paging position: absent or a non-negative integer.
func afterParam(name, s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 63)
	if err != nil {
		return 0, invalidf("%s %q: use a non-negative integer", name, s)
	}
	return n, nil
}

// limitParam parses limit: absent (defaultLimit) or 1 to maxLimit.
func limitParam(s string) (int, error) {
	if s == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxLimit {
		return 0, invalidf("limit %q: use an integer from 1 to %d", s, maxLimit)
	}
	return n, nil
}

// checkName refuses a malformed subscriber name, by Subscribe's rule: 1 to
// 64 ASCII letters, digits, '_' and '-'.
func checkName(name string) error {
	if name == "" || len(name) > 64 {
		return invalidf("subscriber name %q: use 1 to 64 ASCII letters, digits, '_' and '-'", name)
	}
	for i := 0; i < len(name); i++ {
		if !plainByte(name[i]) {
			return invalidf("subscriber name %q has %q: use ASCII letters, digits, '_' and '-'", name, name[i])
		}
	}
	return nil
}

func plainByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// checkType refuses a malformed type filter, by Event.Type's rule:
// dot-separated tokens of ASCII letters, digits, '_' and '-'.
func checkType(t string) error {
	if len(t) > maxTypeLen {
		return invalidf("type is %d bytes: use at most %d", len(t), maxTypeLen)
	}
	for tok := range strings.SplitSeq(t, ".") {
		if tok == "" || strings.IndexFunc(tok, func(c rune) bool { return c > 0x7f || !plainByte(byte(c)) }) >= 0 {
			return invalidf("type %q: use dot-separated tokens of ASCII letters, digits, '_' and '-'", t)
		}
	}
	return nil
}

// checkText refuses a text parameter that is too long or not UTF-8.
func checkText(what, s string, limit int) error {
	if len(s) > limit {
		return invalidf("%s is %d bytes: use at most %d", what, len(s), limit)
	}
	if !utf8.ValidString(s) {
		return invalidf("%s is not valid UTF-8", what)
	}
	return nil
}

// deadLetterFilter reads the filter of a dead-letter list from q.
func deadLetterFilter(q url.Values) (boxcar.DeadLetterFilter, error) {
	f := boxcar.DeadLetterFilter{Subscriber: q.Get("subscriber"), Type: q.Get("type"), Key: q.Get("key"),
		Reason: q.Get("reason"), State: boxcar.DeadLetterState(q.Get("state"))}
	checks := []func() error{
		func() error { return ifSet(f.Subscriber, checkName) },
		func() error { return ifSet(f.Type, checkType) },
		func() error { return checkText("key", f.Key, maxKeyLen) },
		func() error {
			if f.Reason != "" && !slices.Contains(deadLetterReasons, f.Reason) {
				return invalidf("reason %q: use one of %s", f.Reason, strings.Join(deadLetterReasons, ", "))
			}
			return nil
		},
	}
	for _, check := range checks {
		if err := check(); err != nil {
			return f, err
		}
	}
	var err error
	switch f.State {
	case "", boxcar.DeadLetterPending, boxcar.DeadLetterRedriven, boxcar.DeadLetterDiscarded:
	default:
		return f, invalidf("state %q: use pending, redriven or discarded", f.State)
	}
	if f.After, err = afterParam("after", q.Get("after")); err != nil {
		return f, err
	}
	f.Limit, err = limitParam(q.Get("limit"))
	return f, err
}

// ifSet runs check on a parameter given.
func ifSet(s string, check func(string) error) error {
	if s == "" {
		return nil
	}
	return check(s)
}

// decodeBody decodes a JSON object from r's body into v, strictly: unknown
// fields, a second value and a body over MaxBodyBytes are refused. An empty
// body is an empty object (every field of every body is optional).
func decodeBody(r *http.Request, v any) error {
	data, err := io.ReadAll(r.Body)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return invalidf("body is larger than %d bytes", MaxBodyBytes)
	case err != nil:
		return invalidf("reading the body: %v", err)
	case len(strings.TrimSpace(string(data))) == 0:
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidf("body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalidf("body: more than one JSON value")
	}
	return nil
}

// checkWhy refuses a why that cannot be logged as it is.
func checkWhy(why string) error { return checkText("why", why, maxWhyLen) }

// seqOf reads the {seq} path value.
func seqOf(r *http.Request) (uint64, error) {
	return positiveSeq("dead letter seq", r.PathValue("seq"))
}

// nameOf reads and checks the {name} path value.
func nameOf(r *http.Request) (string, error) {
	name := r.PathValue("name")
	return name, checkName(name)
}
