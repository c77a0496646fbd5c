package admin

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// The page's write forms post here. Each form carries the write token in
// its "token" field: no cookie or session is involved, so a request forged
// by another site cannot act. After the action the browser is sent
// (303) to the page of what was acted on, which shows the result
// (Post/Redirect/Get).

// formFields every action form has.
var formFields = []string{"token", "operator", "why"}

// formFunc does one page action with the form's values for operator by.
// It returns the result to show and the page to go back to (relative to the
// root), also on error.
type formFunc func(ctx context.Context, r *http.Request, form url.Values, by string) (result, back string, err error)

func (h *handler) routeActions() {
	m := h.mux
	m.HandleFunc("POST /actions/subscribers/{name}/pause", h.formWrite(h.formPause, "until"))
	m.HandleFunc("POST /actions/subscribers/{name}/resume", h.formWrite(h.formResume))
	m.HandleFunc("POST /actions/subscribers/{name}/retire", h.formWrite(h.formRetire))
	m.HandleFunc("POST /actions/subscribers/{name}/replay", h.formWrite(h.formReplay, "from_kind", "from", "no_dedupe"))
	m.HandleFunc("POST /actions/deadletters/{seq}/redrive", h.formWrite(h.formRedrive))
	m.HandleFunc("POST /actions/deadletters/{seq}/discard", h.formWrite(h.formDiscard))
	m.HandleFunc("POST /actions/deadletters/redrive", h.formWrite(h.formRedriveAll, "subscriber", "key", "key64"))
}

// formWrite serves an action form: a bounded body, the write token, the
// operator, the form's fields (others are refused), fn, the audit log line,
// then a redirect to the result, or an error page.
func (h *handler) formWrite(fn formFunc, fields ...string) http.HandlerFunc {
	allowed := append(slices.Clone(formFields), fields...)
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		form, err := formOf(r, allowed)
		raw := form.Get("operator")
		if err == nil {
			err = h.checkWrite(form.Get("token"))
		}
		if err != nil {
			h.audit(r, truncate(raw, maxOperatorLen), http.StatusSeeOther, err, "")
			h.errorPage(w, r, err)
			return
		}
		operator, err := operatorOf(raw)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), writeTimeout)
		defer cancel()
		result, back := "", ""
		if err == nil {
			result, back, err = fn(ctx, r, form, by(operator, "page", r))
		}
		h.audit(r, truncate(raw, maxOperatorLen), http.StatusSeeOther, err, result)
		if err != nil {
			h.errorPageBack(w, r, err, back)
			return
		}
		id := h.flash.add(flash{OK: true, Message: result, At: time.Now()})
		sep := "?"
		if strings.Contains(back, "?") {
			sep = "&"
		}
		// Relative, as the links: the browser resolves it under the prefix
		// it sees (http.Redirect would resolve it against the stripped path).
		w.Header().Set("Location", rootOf(r.URL.Path)+back+sep+"flash="+id)
		w.WriteHeader(http.StatusSeeOther)
	}
}

// formOf parses the urlencoded body of r, refusing a query on the action's
// URL, fields other than allowed and repeated ones.
func formOf(r *http.Request, allowed []string) (url.Values, error) {
	if r.URL.RawQuery != "" {
		return url.Values{}, invalidf("an action takes no query: its fields go in the form")
	}
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return url.Values{}, invalidf("form is larger than %d bytes", MaxBodyBytes)
		}
		return url.Values{}, invalidf("malformed form: %v", err)
	}
	for k, v := range r.PostForm {
		if !slices.Contains(allowed, k) {
			return url.Values{}, invalidf("unknown form field %q", k)
		}
		if len(v) > 1 {
			return url.Values{}, invalidf("form field %q is given %d times", k, len(v))
		}
	}
	if err := checkWhy(r.PostForm.Get("why")); err != nil {
		return url.Values{}, err
	}
	return r.PostForm, nil
}

func (h *handler) formPause(ctx context.Context, r *http.Request, form url.Values, by string) (string, string, error) {
	name, err := nameOf(r)
	if err != nil {
		return "", "", err
	}
	back := "subscribers/" + name
	var until time.Time
	if s := strings.TrimSpace(form.Get("until")); s != "" {
		if until, err = time.Parse(time.RFC3339, s); err != nil {
			return "", back, invalidf("until %q: use an RFC 3339 time (2026-12-01T10:00:00Z), or nothing to pause until resumed", s)
		}
	}
	if err := h.pause(ctx, name, until, by, form.Get("why")); err != nil {
		return "", back, err
	}
	if until.IsZero() {
		return fmt.Sprintf("%s paused until resumed", name), back, nil
	}
	return fmt.Sprintf("%s paused until %s", name, fmtTime(until)), back, nil
}

func (h *handler) formResume(ctx context.Context, r *http.Request, form url.Values, by string) (string, string, error) {
	name, err := nameOf(r)
	if err != nil {
		return "", "", err
	}
	back := "subscribers/" + name
	if err := h.bus.ResumeSubscriber(ctx, name, by, form.Get("why")); err != nil {
		return "", back, err
	}
	return name + " resumed", back, nil
}

func (h *handler) formRetire(ctx context.Context, r *http.Request, form url.Values, by string) (string, string, error) {
	name, err := nameOf(r)
	if err != nil {
		return "", "", err
	}
	if err := h.bus.RetireSubscriber(ctx, name, by, form.Get("why")); err != nil {
		return "", "subscribers/" + name, err
	}
	return name + " retired", "", nil
}

func (h *handler) formReplay(ctx context.Context, r *http.Request, form url.Values, by string) (string, string, error) {
	name, err := nameOf(r)
	if err != nil {
		return "", "", err
	}
	back := "subscribers/" + name
	from, err := replayFromForm(form.Get("from_kind"), strings.TrimSpace(form.Get("from")))
	if err != nil {
		return "", back, err
	}
	noDedupe := false
	switch form.Get("no_dedupe") {
	case "":
	case "on":
		noDedupe = true
	default:
		return "", back, invalidf("no_dedupe %q: a checkbox is \"on\" or absent", form.Get("no_dedupe"))
	}
	st, err := h.replay(ctx, boxcar.ReplayRequest{Subscriber: name, From: from, NoDedupe: noDedupe, By: by, Why: form.Get("why")})
	if err != nil {
		return "", back, err
	}
	return fmt.Sprintf("replay of %s from stream seq %d through %d started", name, st.From, st.Through), back, nil
}

// replayFromForm reads where a replay starts: kind is stream_seq,
// outbox_seq or time.
func replayFromForm(kind, value string) (boxcar.ReplayFrom, error) {
	var from boxcar.ReplayFrom
	switch kind {
	case "stream_seq":
		n, err := positiveSeq("from (a stream seq)", value)
		from.StreamSeq = n
		return from, err
	case "outbox_seq":
		n, err := positiveSeq("from (an outbox seq)", value)
		if err == nil && n > math.MaxInt64 {
			err = invalidf("from (an outbox seq) %q is too large", value)
		}
		from.OutboxSeq = int64(n)
		return from, err
	case "time":
		t, err := time.Parse(time.RFC3339, value)
		if err != nil {
			return from, invalidf("from %q: use an RFC 3339 time (2026-12-01T10:00:00Z)", value)
		}
		from.Time = t
		return from, nil
	}
	return from, invalidf("from_kind %q: use stream_seq, outbox_seq or time", kind)
}

func (h *handler) formRedrive(ctx context.Context, r *http.Request, form url.Values, by string) (string, string, error) {
	seq, err := seqOf(r)
	if err != nil {
		return "", "", err
	}
	back := "deadletters/" + strconv.FormatUint(seq, 10)
	res, err := h.redrive(ctx, boxcar.RedriveRequest{Seq: seq, By: by, Why: form.Get("why")})
	if err != nil {
		return "", back, err
	}
	return redriveResult(res), back, nil
}

func redriveResult(res boxcar.RedriveResult) string {
	if len(res.Redriven) == 0 && res.Done > 0 {
		return fmt.Sprintf("nothing to do: %d letter(s) were redriven or discarded before", res.Done)
	}
	s := fmt.Sprintf("redriven: %d letter(s) %v", len(res.Redriven), res.Redriven)
	if res.Done > 0 {
		s += fmt.Sprintf("; %d acted on before", res.Done)
	}
	if res.Gone > 0 {
		s += fmt.Sprintf("; %d no longer in the dead-letter stream (its retention)", res.Gone)
	}
	return s
}

func (h *handler) formDiscard(ctx context.Context, r *http.Request, form url.Values, by string) (string, string, error) {
	seq, err := seqOf(r)
	if err != nil {
		return "", "", err
	}
	back := "deadletters/" + strconv.FormatUint(seq, 10)
	ok, err := h.discard(ctx, seq, by, form.Get("why"))
	if err != nil {
		return "", back, err
	}
	if !ok {
		return fmt.Sprintf("nothing to do: letter %d was redriven or discarded before", seq), back, nil
	}
	return fmt.Sprintf("letter %d discarded", seq), back, nil
}

func (h *handler) formRedriveAll(ctx context.Context, r *http.Request, form url.Values, by string) (string, string, error) {
	req := boxcar.RedriveRequest{Subscriber: form.Get("subscriber"), Key: form.Get("key"), By: by, Why: form.Get("why")}
	// The pages' hidden fields carry a key as key64 (see key64Of): a
	// browser would change its line breaks and NULs.
	if k64 := form.Get("key64"); k64 != "" {
		k, err := base64.RawURLEncoding.DecodeString(k64)
		if err != nil || req.Key != "" {
			return "", "deadletters", invalidf("key64 %q: give one key, as unpadded base64url", shorten(16, k64))
		}
		req.Key = string(k)
	}
	back := "deadletters?" + filterQuery(boxcar.DeadLetterFilter{Subscriber: req.Subscriber, Key: req.Key}, 0).Encode()
	if err := checkRedriveAll(req); err != nil {
		return "", "deadletters", err
	}
	res, err := h.redrive(ctx, req)
	// On an error partway, what it redrove goes to the audit log.
	return redriveResult(res), back, err
}
