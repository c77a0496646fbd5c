package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// subscriberPageView is the data of /subscribers/{name}.
type subscriberPageView struct {
	Sub     subscriberView
	Letters letterList
	// ReasonParked is the reason to filter a subscriber's parked letters by.
	ReasonParked string
}

func (h *handler) subscriberPage(r *http.Request, q url.Values) (string, any, error) {
	name, err := nameOf(r)
	if err != nil {
		return "", nil, err
	}
	if err := onlyParams(q); err != nil {
		return "", nil, err
	}
	ctx := r.Context()
	info, err := h.subscriber(ctx, name)
	if err != nil {
		return "", nil, err
	}
	hl, err := h.bus.Health(ctx)
	if err != nil {
		return "", nil, err
	}
	depths, err := h.bus.DeadLetterDepths(ctx)
	if err != nil {
		depths = nil // the list below shows the error
	}
	v := subscriberPageView{Sub: subscriberViewOf(info, hl, depths, time.Now()), ReasonParked: boxcar.DeadLetterReasonParked}
	v.Letters = h.letterList(ctx, boxcar.DeadLetterFilter{Subscriber: name, State: boxcar.DeadLetterPending, Limit: overviewLetters})
	return "Subscriber " + name, v, nil
}

// deadLettersView is the data of /deadletters.
type deadLettersView struct {
	List    letterList
	Reasons []string
	States  []boxcar.DeadLetterState
}

func (h *handler) deadLettersPage(r *http.Request, q url.Values) (string, any, error) {
	if err := onlyParams(q, "subscriber", "type", "key", "reason", "state", "after", "limit"); err != nil {
		return "", nil, err
	}
	f, err := deadLetterFilter(q)
	if err != nil {
		return "", nil, err
	}
	v := deadLettersView{List: h.letterList(r.Context(), f), Reasons: deadLetterReasons,
		States: []boxcar.DeadLetterState{boxcar.DeadLetterPending, boxcar.DeadLetterRedriven, boxcar.DeadLetterDiscarded}}
	if v.List.cause != nil {
		return "", nil, v.List.cause
	}
	return "Dead letters", v, nil
}

func (h *handler) deadLetterPage(r *http.Request, q url.Values) (string, any, error) {
	seq, err := seqOf(r)
	if err != nil {
		return "", nil, err
	}
	if err := onlyParams(q); err != nil {
		return "", nil, err
	}
	dl, err := h.bus.DeadLetter(r.Context(), seq)
	if err != nil {
		return "", nil, err
	}
	return fmt.Sprintf("Dead letter %d", seq), dl, nil
}

// outboxView is the outbox's pending events and the events set aside.
type outboxView struct {
	Pending      []boxcar.OutboxEvent
	PendingErr   string
	NextPending  string // link to the next page of pending events
	SetAside     []boxcar.OutboxDeadLetter
	SetAsideErr  string
	SetAsideAll  int
	NextSetAside string
}

func (h *handler) outboxView(ctx context.Context, after int64, afterSeq int64, afterID string, limit int) outboxView {
	var v outboxView
	var err error
	page := func(q url.Values) string {
		if limit != defaultLimit && limit != overviewOutbox {
			q.Set("limit", strconv.Itoa(limit))
		}
		return "outbox?" + q.Encode()
	}
	if v.Pending, err = h.bus.OutboxPending(ctx, after, limit); err != nil {
		v.PendingErr = err.Error()
	} else if len(v.Pending) == limit {
		v.NextPending = page(url.Values{"after": {strconv.FormatInt(v.Pending[limit-1].Seq, 10)}})
	}
	var more bool
	if v.SetAside, v.SetAsideAll, more, err = h.bus.OutboxDeadLetters(ctx, afterSeq, afterID, limit); err == nil {
		for i := range v.SetAside {
			v.SetAside[i].Data = nil // the page shows none
		}
	}
	if err != nil {
		v.SetAsideErr = err.Error()
	} else if more && len(v.SetAside) > 0 {
		last := v.SetAside[len(v.SetAside)-1]
		v.NextSetAside = page(url.Values{"after_seq": {strconv.FormatInt(last.Seq, 10)}, "after_id": {last.ID}})
	}
	return v
}

func (h *handler) outboxPage(r *http.Request, q url.Values) (string, any, error) {
	if err := onlyParams(q, "after", "after_seq", "after_id", "limit"); err != nil {
		return "", nil, err
	}
	after, err := afterParam("after", q.Get("after"))
	if err != nil {
		return "", nil, err
	}
	afterSeq, err := afterParam("after_seq", q.Get("after_seq"))
	if err != nil {
		return "", nil, err
	}
	if err := checkText("after_id", q.Get("after_id"), maxIDLen); err != nil {
		return "", nil, err
	}
	limit, err := limitParam(q.Get("limit"))
	if err != nil {
		return "", nil, err
	}
	return "Outbox", h.outboxView(r.Context(), int64(after), int64(afterSeq), q.Get("after_id"), limit), nil
}
