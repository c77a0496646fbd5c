package admin

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// writeTimeout bounds a write's call into the library. A write goes on if
// its client goes away, so that its outcome does not depend on when the
// connection dropped.
const writeTimeout = time.Minute

// routeAPI registers the routes of docs/ADMIN_API.md.
func (h *handler) routeAPI() {
	m := h.mux
	m.HandleFunc("GET /api/status", h.apiRead(h.getStatus))
	m.HandleFunc("GET /api/health", h.apiRead(h.getHealth))
	m.HandleFunc("GET /api/subscribers", h.apiRead(h.getSubscribers))
	m.HandleFunc("GET /api/subscribers/{name}", h.apiRead(h.getSubscriber))
	m.HandleFunc("POST /api/subscribers/{name}/pause", h.apiWrite(h.postPause))
	m.HandleFunc("POST /api/subscribers/{name}/resume", h.apiWrite(h.subscriberAction(h.bus.ResumeSubscriber)))
	m.HandleFunc("POST /api/subscribers/{name}/retire", h.apiWrite(h.subscriberAction(h.bus.RetireSubscriber)))
	m.HandleFunc("POST /api/subscribers/{name}/replay", h.apiWrite(h.postReplay))
	m.HandleFunc("GET /api/subscribers/{name}/replay", h.apiRead(h.getReplay))
	m.HandleFunc("GET /api/deadletters", h.apiReadLetters(h.getDeadLetters))
	m.HandleFunc("GET /api/deadletters/{seq}", h.apiReadLetters(h.getDeadLetter))
	m.HandleFunc("POST /api/deadletters/{seq}/redrive", h.apiWrite(h.postRedrive))
	m.HandleFunc("POST /api/deadletters/redrive", h.apiWrite(h.postRedriveAll))
	m.HandleFunc("POST /api/deadletters/{seq}/discard", h.apiWrite(h.postDiscard))
	m.HandleFunc("GET /api/outbox", h.apiRead(h.getOutbox))
	m.HandleFunc("GET /api/outbox/dead", h.apiReadLetters(h.getOutboxDead))
	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, notFoundf("no route %s %s (see docs/ADMIN_API.md)", r.Method, r.URL.Path))
	})
}

// withStatus is a response body with a status other than 200.
type withStatus struct {
	status int
	body   any
}

// apiRead serves a read route: the read credential, then fn's value as
// JSON.
func (h *handler) apiRead(fn func(r *http.Request) (any, error)) http.HandlerFunc {
	return h.apiReadTurn(fn, false)
}

// apiReadLetters serves a read route whose answer holds letters: as
// apiRead, in one of the letter turns.
func (h *handler) apiReadLetters(fn func(r *http.Request) (any, error)) http.HandlerFunc {
	return h.apiReadTurn(fn, true)
}

func (h *handler) apiReadTurn(fn func(r *http.Request) (any, error), letters bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h.checkRead(r, false); err != nil {
			writeError(w, err)
			return
		}
		if letters {
			release, err := h.letterTurn(w, r, h.apiTurns, apiTurnWrite)
			if err != nil {
				writeError(w, err)
				return
			}
			defer release() // after the answer is written: its JSON is held till then
		}
		out, err := fn(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if ws, ok := out.(withStatus); ok {
			writeJSON(w, ws.status, ws.body)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// apiWriteFunc does one write for operator by; detail goes to the audit
// log.
type apiWriteFunc func(ctx context.Context, r *http.Request, by string) (out any, detail string, err error)

// apiWrite serves a write route: the write token, the operator, a bounded
// body, fn, the audit log line, the response.
func (h *handler) apiWrite(fn apiWriteFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		raw := r.Header.Get(OperatorHeader)
		operator, err := operatorOf(raw)
		if authErr := h.checkWrite(bearer(r)); authErr != nil {
			err = authErr
		}
		if err != nil {
			h.audit(r, truncate(raw, maxOperatorLen), http.StatusOK, err, "")
			writeError(w, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), writeTimeout)
		defer cancel()
		out, detail, err := fn(ctx, r, by(operator, "API", r))
		h.audit(r, operator, http.StatusOK, err, detail)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, out)
	}
}

// truncate cuts s to at most n bytes, for the log.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "..."
}

// errorBody is every error's body.
type errorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeError(w http.ResponseWriter, err error) {
	ae := errorOf(err)
	if ae.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="boxcar admin"`)
	}
	writeJSON(w, ae.status, errorBody{Error: ae.msg, Code: ae.code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v) // the client went away, if it fails
}

type okBody struct {
	OK bool `json:"ok"`
}

type statusBody struct {
	Stats  boxcar.Stats  `json:"stats"`
	Health boxcar.Health `json:"health"`
}

func (h *handler) getStatus(r *http.Request) (any, error) {
	if _, err := queryOf(r); err != nil {
		return nil, err
	}
	st, err := h.bus.Stats(r.Context())
	if err != nil {
		return nil, err
	}
	hl, err := h.bus.Health(r.Context())
	if err != nil {
		return nil, err
	}
	return statusBody{Stats: st, Health: hl}, nil
}

// getHealth is a probe: 200 when the bus is ok, 503 otherwise.
func (h *handler) getHealth(r *http.Request) (any, error) {
	if _, err := queryOf(r); err != nil {
		return nil, err
	}
	hl, err := h.bus.Health(r.Context())
	if err != nil {
		return nil, err
	}
	if hl.State != boxcar.HealthOK {
		return withStatus{status: http.StatusServiceUnavailable, body: hl}, nil
	}
	return hl, nil
}

type itemsBody[T any] struct {
	Items []T `json:"items"`
}

func (h *handler) getSubscribers(r *http.Request) (any, error) {
	if _, err := queryOf(r); err != nil {
		return nil, err
	}
	subs, err := h.bus.Subscribers(r.Context())
	if err != nil {
		return nil, err
	}
	return itemsBody[boxcar.SubscriberInfo]{Items: nonNil(subs)}, nil
}

func (h *handler) getSubscriber(r *http.Request) (any, error) {
	name, err := nameOf(r)
	if err != nil {
		return nil, err
	}
	if _, err := queryOf(r); err != nil {
		return nil, err
	}
	return h.subscriber(r.Context(), name)
}

// subscriber returns the SubscriberInfo of name.
func (h *handler) subscriber(ctx context.Context, name string) (boxcar.SubscriberInfo, error) {
	subs, err := h.bus.Subscribers(ctx)
	if err != nil {
		return boxcar.SubscriberInfo{}, err
	}
	for _, s := range subs {
		if s.Name == name {
			return s, nil
		}
	}
	return boxcar.SubscriberInfo{}, notFoundf("no subscriber %q: it never ran on this database, or it was retired", name)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
