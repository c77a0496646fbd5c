package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// The routes of docs/ADMIN_API.md, one method each.

// Subscribers lists every subscriber the app's database knows.
func (c *Client) Subscribers(ctx context.Context) ([]boxcar.SubscriberInfo, error) {
	var out struct {
		Items []boxcar.SubscriberInfo `json:"items"`
	}
	err := c.do(ctx, http.MethodGet, "/api/subscribers", nil, nil, &out)
	return out.Items, err
}

// Subscriber returns one subscriber (an APIError matching
// boxcar.ErrNotFound if it never ran).
func (c *Client) Subscriber(ctx context.Context, name string) (boxcar.SubscriberInfo, error) {
	var si boxcar.SubscriberInfo
	err := c.do(ctx, http.MethodGet, "/api/subscribers/"+url.PathEscape(name), nil, nil, &si)
	return si, err
}

type whyBody struct {
	Why string `json:"why"`
}

type okBody struct {
	OK bool `json:"ok"`
}

// Pause stops the delivery of events to subscriber name until until (zero:
// until Resume).
func (c *Client) Pause(ctx context.Context, name string, until time.Time, why string) error {
	body := struct {
		Until *string `json:"until,omitempty"`
		Why   string  `json:"why"`
	}{Why: why}
	if !until.IsZero() {
		s := until.Format(time.RFC3339)
		body.Until = &s
	}
	return c.subscriberWrite(ctx, name, "pause", body)
}

// Resume ends a pause of subscriber name.
func (c *Client) Resume(ctx context.Context, name, why string) error {
	return c.subscriberWrite(ctx, name, "resume", whyBody{Why: why})
}

// Retire removes subscriber name for good (it must not be running).
func (c *Client) Retire(ctx context.Context, name, why string) error {
	return c.subscriberWrite(ctx, name, "retire", whyBody{Why: why})
}

func (c *Client) subscriberWrite(ctx context.Context, name, action string, body any) error {
	var ok okBody
	if err := c.do(ctx, http.MethodPost, "/api/subscribers/"+url.PathEscape(name)+"/"+action, nil, body, &ok); err != nil {
		return err
	}
	if !ok.OK {
		return fmt.Errorf("%w: POST %s of %s answered without \"ok\": true", ErrUnexpectedResponse, action, name)
	}
	return nil
}

// replayFrom is boxcar.ReplayFrom as the API takes it: exactly one field.
func replayFrom(from boxcar.ReplayFrom) map[string]any {
	m := map[string]any{}
	if from.StreamSeq > 0 {
		m["stream_seq"] = from.StreamSeq
	}
	if from.OutboxSeq > 0 {
		m["outbox_seq"] = from.OutboxSeq
	}
	if !from.Time.IsZero() {
		m["time"] = from.Time.Format(time.RFC3339Nano)
	}
	return m
}

// Replay starts a replay of subscriber name (see boxcar.ReplayRequest).
func (c *Client) Replay(ctx context.Context, name string, from boxcar.ReplayFrom, noDedupe bool, why string) (boxcar.ReplayStatus, error) {
	body := struct {
		From     map[string]any `json:"from"`
		NoDedupe bool           `json:"no_dedupe"`
		Why      string         `json:"why"`
	}{From: replayFrom(from), NoDedupe: noDedupe, Why: why}
	var st boxcar.ReplayStatus
	err := c.do(ctx, http.MethodPost, "/api/subscribers/"+url.PathEscape(name)+"/replay", nil, body, &st)
	return st, err
}

// ReplayProgress returns where the replay of subscriber name stands (an
// APIError matching boxcar.ErrNotFound when it has none).
func (c *Client) ReplayProgress(ctx context.Context, name string) (boxcar.ReplayStatus, error) {
	var st boxcar.ReplayStatus
	err := c.do(ctx, http.MethodGet, "/api/subscribers/"+url.PathEscape(name)+"/replay", nil, nil, &st)
	return st, err
}

// DeadLetters returns the dead letters that match f, and the Seq to pass
// as f.After for the next page (0: none).
func (c *Client) DeadLetters(ctx context.Context, f boxcar.DeadLetterFilter) ([]boxcar.DeadLetter, uint64, error) {
	q := url.Values{}
	for k, v := range map[string]string{"subscriber": f.Subscriber, "type": f.Type, "key": f.Key, "reason": f.Reason, "state": string(f.State)} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.After > 0 {
		q.Set("after", strconv.FormatUint(f.After, 10))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	var out struct {
		Items []boxcar.DeadLetter `json:"items"`
		Next  uint64              `json:"next"`
	}
	err := c.do(ctx, http.MethodGet, "/api/deadletters", q, nil, &out)
	return out.Items, out.Next, err
}

// DeadLetter returns dead letter seq.
func (c *Client) DeadLetter(ctx context.Context, seq uint64) (boxcar.DeadLetter, error) {
	var dl boxcar.DeadLetter
	err := c.do(ctx, http.MethodGet, "/api/deadletters/"+strconv.FormatUint(seq, 10), nil, nil, &dl)
	return dl, err
}

// Redrive redrives dead letter seq.
func (c *Client) Redrive(ctx context.Context, seq uint64, why string) (boxcar.RedriveResult, error) {
	var res boxcar.RedriveResult
	err := c.do(ctx, http.MethodPost, "/api/deadletters/"+strconv.FormatUint(seq, 10)+"/redrive", nil, whyBody{Why: why}, &res)
	return res, err
}

// RedriveAll redrives every pending dead letter of subscriber (of its key
// key, if not empty).
func (c *Client) RedriveAll(ctx context.Context, subscriber, key, why string) (boxcar.RedriveResult, error) {
	body := struct {
		Subscriber string `json:"subscriber"`
		Key        string `json:"key"`
		Why        string `json:"why"`
	}{subscriber, key, why}
	var res boxcar.RedriveResult
	err := c.do(ctx, http.MethodPost, "/api/deadletters/redrive", nil, body, &res)
	return res, err
}

// Discard gives up on dead letter seq; false means it was acted on before
// (nothing was done).
func (c *Client) Discard(ctx context.Context, seq uint64, why string) (bool, error) {
	var out struct {
		Discarded *bool `json:"discarded"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/deadletters/"+strconv.FormatUint(seq, 10)+"/discard", nil, whyBody{Why: why}, &out); err != nil {
		return false, err
	}
	if out.Discarded == nil {
		return false, fmt.Errorf("%w: POST discard of dead letter %d answered without \"discarded\"", ErrUnexpectedResponse, seq)
	}
	return *out.Discarded, nil
}

// OutboxPending returns up to limit events the relay has not put in the
// stream yet, after outbox seq after.
func (c *Client) OutboxPending(ctx context.Context, after int64, limit int) ([]boxcar.OutboxEvent, error) {
	q := url.Values{}
	if after > 0 {
		q.Set("after", strconv.FormatInt(after, 10))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Items []boxcar.OutboxEvent `json:"items"`
	}
	err := c.do(ctx, http.MethodGet, "/api/outbox", q, nil, &out)
	return out.Items, err
}

// OutboxDead returns up to limit events the relay set aside, after the one
// with outbox seq afterSeq and ID afterID, how many there are in all, and
// whether more may follow (a page also ends at boxcar.MaxPageBytes).
func (c *Client) OutboxDead(ctx context.Context, afterSeq int64, afterID string, limit int) (_ []boxcar.OutboxDeadLetter, total int, more bool, _ error) {
	q := url.Values{}
	if afterSeq > 0 {
		q.Set("after_seq", strconv.FormatInt(afterSeq, 10))
	}
	if afterID != "" {
		q.Set("after_id", afterID)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Items []boxcar.OutboxDeadLetter `json:"items"`
		Total int                       `json:"total"`
		More  *bool                     `json:"more"`
	}
	err := c.do(ctx, http.MethodGet, "/api/outbox/dead", q, nil, &out)
	// An older app answers no "more": a full page may have more behind it.
	more = len(out.Items) > 0 && len(out.Items) == limit
	if out.More != nil {
		more = *out.More
	}
	return out.Items, out.Total, more, err
}
