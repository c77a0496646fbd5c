package admin

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// The bodies of the write routes (docs/ADMIN_API.md). Every field is
// optional; unknown fields are refused.
type (
	whyBody struct {
		Why string `json:"why"`
	}
	pauseBody struct {
		Until time.Time `json:"until"`
		Why   string    `json:"why"`
	}
	replayBody struct {
		From     boxcar.ReplayFrom `json:"from"`
		NoDedupe bool              `json:"no_dedupe"`
		Why      string            `json:"why"`
	}
	redriveAllBody struct {
		Subscriber string `json:"subscriber"`
		Key        string `json:"key"`
		Why        string `json:"why"`
	}
)

// nameAndWhy reads the {name} path value and a body of just a why.
func nameAndWhy(r *http.Request) (string, string, error) {
	name, err := nameOf(r)
	if err != nil {
		return "", "", err
	}
	var body whyBody
	if err := decodeBody(r, &body); err != nil {
		return "", "", err
	}
	return name, body.Why, checkWhy(body.Why)
}

func (h *handler) postPause(ctx context.Context, r *http.Request, by string) (any, string, error) {
	name, err := nameOf(r)
	if err != nil {
		return nil, "", err
	}
	var body pauseBody
	if err := decodeBody(r, &body); err != nil {
		return nil, "", err
	}
	if err := checkWhy(body.Why); err != nil {
		return nil, "", err
	}
	if err := h.pause(ctx, name, body.Until, by, body.Why); err != nil {
		return nil, "", err
	}
	return okBody{OK: true}, fmt.Sprintf("subscriber=%s until=%v", name, body.Until), nil
}

// pause pauses name until until (zero: until resumed), refusing a time
// past.
func (h *handler) pause(ctx context.Context, name string, until time.Time, by, why string) error {
	if !until.IsZero() && !until.After(time.Now()) {
		return invalidf("until %s is past: give a time to come, or none to pause until resumed", until.Format(time.RFC3339))
	}
	return h.bus.PauseSubscriber(ctx, name, until, by, why)
}

// subscriberAction is a write route that names a subscriber and says why:
// resume and retire.
func (h *handler) subscriberAction(act func(ctx context.Context, name, by, why string) error) func(context.Context, *http.Request, string) (any, string, error) {
	return func(ctx context.Context, r *http.Request, by string) (any, string, error) {
		name, why, err := nameAndWhy(r)
		if err != nil {
			return nil, "", err
		}
		if err := act(ctx, name, by, why); err != nil {
			return nil, "", err
		}
		return okBody{OK: true}, fmt.Sprintf("subscriber=%s", name), nil
	}
}

func (h *handler) postReplay(ctx context.Context, r *http.Request, by string) (any, string, error) {
	name, err := nameOf(r)
	if err != nil {
		return nil, "", err
	}
	var body replayBody
	if err := decodeBody(r, &body); err != nil {
		return nil, "", err
	}
	if err := checkWhy(body.Why); err != nil {
		return nil, "", err
	}
	st, err := h.replay(ctx, boxcar.ReplayRequest{Subscriber: name, From: body.From, NoDedupe: body.NoDedupe, By: by, Why: body.Why})
	if err != nil {
		return nil, "", err
	}
	return st, fmt.Sprintf("subscriber=%s from=%d through=%d no_dedupe=%v", name, st.From, st.Through, st.NoDedupe), nil
}

// replay refuses what the library would read as "not set" (a negative
// outbox seq), then replays.
func (h *handler) replay(ctx context.Context, req boxcar.ReplayRequest) (boxcar.ReplayStatus, error) {
	if req.From.OutboxSeq < 0 {
		return boxcar.ReplayStatus{}, invalidf("from.outbox_seq %d: use a positive integer", req.From.OutboxSeq)
	}
	return h.bus.Replay(ctx, req)
}

func (h *handler) getReplay(r *http.Request) (any, error) {
	name, err := nameOf(r)
	if err != nil {
		return nil, err
	}
	if _, err := queryOf(r); err != nil {
		return nil, err
	}
	return h.bus.ReplayProgress(r.Context(), name)
}

type deadLettersBody struct {
	Items []boxcar.DeadLetter `json:"items"`
	Next  uint64              `json:"next"`
}

func (h *handler) getDeadLetters(r *http.Request) (any, error) {
	q, err := queryOf(r, "subscriber", "type", "key", "reason", "state", "after", "limit")
	if err != nil {
		return nil, err
	}
	f, err := deadLetterFilter(q)
	if err != nil {
		return nil, err
	}
	items, next, err := h.bus.DeadLetters(r.Context(), f)
	if err != nil {
		return nil, err
	}
	return deadLettersBody{Items: nonNil(items), Next: next}, nil
}

func (h *handler) getDeadLetter(r *http.Request) (any, error) {
	seq, err := seqOf(r)
	if err != nil {
		return nil, err
	}
	if _, err := queryOf(r); err != nil {
		return nil, err
	}
	return h.bus.DeadLetter(r.Context(), seq)
}

func (h *handler) postRedrive(ctx context.Context, r *http.Request, by string) (any, string, error) {
	seq, err := seqOf(r)
	if err != nil {
		return nil, "", err
	}
	var body whyBody
	if err := decodeBody(r, &body); err != nil {
		return nil, "", err
	}
	if err := checkWhy(body.Why); err != nil {
		return nil, "", err
	}
	res, err := h.redrive(ctx, boxcar.RedriveRequest{Seq: seq, By: by, Why: body.Why})
	if err != nil {
		return nil, "", err
	}
	return res, fmt.Sprintf("seq=%d redriven=%v done=%d", seq, res.Redriven, res.Done), nil
}

func (h *handler) postRedriveAll(ctx context.Context, r *http.Request, by string) (any, string, error) {
	var body redriveAllBody
	if err := decodeBody(r, &body); err != nil {
		return nil, "", err
	}
	req := boxcar.RedriveRequest{Subscriber: body.Subscriber, Key: body.Key, By: by, Why: body.Why}
	if err := checkRedriveAll(req); err != nil {
		return nil, "", err
	}
	res, err := h.redrive(ctx, req)
	// A redrive that failed partway redrove some: the audit log says which
	// (the error, how many).
	detail := fmt.Sprintf("subscriber=%s key=%q redriven=%v done=%d gone=%d", req.Subscriber, req.Key, res.Redriven, res.Done, res.Gone)
	if err != nil {
		return nil, detail, err
	}
	return res, detail, nil
}

// checkRedriveAll checks a redrive of a subscriber's letters (of one key,
// if Key is set).
func checkRedriveAll(req boxcar.RedriveRequest) error {
	if req.Subscriber == "" {
		return invalidf("subscriber is empty: name the subscriber whose letters to redrive (and key, for one key's)")
	}
	if err := checkName(req.Subscriber); err != nil {
		return err
	}
	if err := checkText("key", req.Key, maxKeyLen); err != nil {
		return err
	}
	return checkWhy(req.Why)
}

// redrive redrives, one at a time per handler: the library reports a
// letter that a concurrent redrive or discard took first as an error it
// does not export, and its caller may read the letter before the other's
// commit shows. Serialized, the second redrive finds the letter acted on
// and reports it done. A race with a writer outside this handler (another
// handler, the library called directly) is read back from the letter's
// state once.
func (h *handler) redrive(ctx context.Context, req boxcar.RedriveRequest) (boxcar.RedriveResult, error) {
	h.letterWrites.Lock()
	defer h.letterWrites.Unlock()
	res, err := h.bus.Redrive(ctx, req)
	if err != nil && req.Seq != 0 && errorOf(err).code == codeInternal {
		if dl, rerr := h.bus.DeadLetter(ctx, req.Seq); rerr == nil && dl.State != boxcar.DeadLetterPending {
			res, err = boxcar.RedriveResult{Done: 1}, nil
		}
	}
	// The library finds no letter of a subscriber it never knew, and says
	// nothing: a misspelt name would read as "nothing to redrive".
	if err == nil && req.Seq == 0 && len(res.Redriven) == 0 && res.Done == 0 {
		if _, serr := h.subscriber(ctx, req.Subscriber); serr != nil && errorOf(serr).code == codeNotFound {
			err = serr
		}
	}
	res.Redriven = nonNil(res.Redriven)
	return res, err
}

// discard discards, one at a time per handler with redrives.
func (h *handler) discard(ctx context.Context, seq uint64, by, why string) (bool, error) {
	h.letterWrites.Lock()
	defer h.letterWrites.Unlock()
	return h.bus.Discard(ctx, seq, by, why)
}

type discardBody struct {
	Discarded bool `json:"discarded"`
}

func (h *handler) postDiscard(ctx context.Context, r *http.Request, by string) (any, string, error) {
	seq, err := seqOf(r)
	if err != nil {
		return nil, "", err
	}
	var body whyBody
	if err := decodeBody(r, &body); err != nil {
		return nil, "", err
	}
	if err := checkWhy(body.Why); err != nil {
		return nil, "", err
	}
	ok, err := h.discard(ctx, seq, by, body.Why)
	if err != nil {
		return nil, "", err
	}
	return discardBody{Discarded: ok}, fmt.Sprintf("seq=%d discarded=%v", seq, ok), nil
}

func (h *handler) getOutbox(r *http.Request) (any, error) {
	q, err := queryOf(r, "after", "limit")
	if err != nil {
		return nil, err
	}
	after, err := afterParam("after", q.Get("after"))
	if err != nil {
		return nil, err
	}
	limit, err := limitParam(q.Get("limit"))
	if err != nil {
		return nil, err
	}
	items, err := h.bus.OutboxPending(r.Context(), int64(after), limit)
	if err != nil {
		return nil, err
	}
	return itemsBody[boxcar.OutboxEvent]{Items: nonNil(items)}, nil
}

type outboxDeadBody struct {
	Items []boxcar.OutboxDeadLetter `json:"items"`
	Total int                       `json:"total"`
	More  bool                      `json:"more"`
}

func (h *handler) getOutboxDead(r *http.Request) (any, error) {
	q, err := queryOf(r, "after_seq", "after_id", "limit")
	if err != nil {
		return nil, err
	}
	afterSeq, err := afterParam("after_seq", q.Get("after_seq"))
	if err != nil {
		return nil, err
	}
	afterID := q.Get("after_id")
	if err := checkText("after_id", afterID, maxIDLen); err != nil {
		return nil, err
	}
	limit, err := limitParam(q.Get("limit"))
	if err != nil {
		return nil, err
	}
	items, total, more, err := h.bus.OutboxDeadLetters(r.Context(), int64(afterSeq), afterID, limit)
	if err != nil {
		return nil, err
	}
	return outboxDeadBody{Items: nonNil(items), Total: total, More: more}, nil
}
