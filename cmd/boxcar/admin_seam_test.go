package main

// THE SEAM BETWEEN THESE TESTS AND THE ADMIN HANDLER.
//
// The online tests reach the bus only through startAdmin. Package admin
// (the real handler, docs/ADMIN_API.md) is written in another branch; until
// it is merged, startAdmin serves contractHandler below: a minimal handler
// written from docs/ADMIN_API.md for these tests only, not a second
// implementation to keep. When package admin is merged:
//
//  1. in startAdmin, replace the line marked SWITCH with
//     h := admin.Handler(bus, admin.Options{Token: token})
//     (and import "github.com/boxcar-bus/boxcar/admin");
//  2. delete everything below "---- minimal contract handler" and the
//     imports only it uses.
//
// Nothing else in the tests changes.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// startAdmin serves bus's admin handler, mounted under /admin/ as an app
// would, and returns its URL and its write token.
func startAdmin(t *testing.T, bus *boxcar.Bus) (url, token string) {
	t.Helper()
	token = boxcar.NewSecret()
	h := contractHandler(bus, token) // SWITCH: admin.Handler(bus, admin.Options{Token: token})
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/admin", token
}

// ---- minimal contract handler (delete at the merge of package admin) ----

// contractHandler answers the routes of docs/ADMIN_API.md with bus: JSON
// only, writes with the bearer token, errors as {"error","code"}.
func contractHandler(bus *boxcar.Bus, token string) http.Handler {
	m := http.NewServeMux()
	get := func(pattern string, fn func(r *http.Request) (any, error)) {
		m.HandleFunc("GET "+pattern, func(w http.ResponseWriter, r *http.Request) {
			v, err := fn(r)
			answer(w, v, err)
		})
	}
	post := func(pattern string, fn func(r *http.Request, by string) (any, error)) {
		m.HandleFunc("POST "+pattern, func(w http.ResponseWriter, r *http.Request) {
			switch r.Header.Get("Authorization") {
			case "":
				w.Header().Set("WWW-Authenticate", "Bearer")
				writeErr(w, http.StatusUnauthorized, "unauthorized", "a write needs a bearer token")
			case "Bearer " + token:
				by := r.Header.Get("X-Boxcar-Operator")
				if by == "" {
					by = "anonymous"
				}
				v, err := fn(r, by+" via admin API from "+r.RemoteAddr)
				answer(w, v, err)
			default:
				writeErr(w, http.StatusForbidden, "forbidden", "wrong token")
			}
		})
	}
	readRoutes(m, bus, get)
	post("/api/subscribers/{name}/{action}", func(r *http.Request, by string) (any, error) { return subscriberWrite(bus, r, by) })
	post("/api/deadletters/redrive", func(r *http.Request, by string) (any, error) {
		var b struct{ Subscriber, Key, Why string }
		if err := decode(r, &b); err != nil {
			return nil, err
		}
		return bus.Redrive(r.Context(), boxcar.RedriveRequest{Subscriber: b.Subscriber, Key: b.Key, By: by, Why: b.Why})
	})
	post("/api/deadletters/{seq}/{action}", func(r *http.Request, by string) (any, error) { return deadLetterWrite(bus, r, by) })
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "not_found", "no route "+r.URL.Path)
	})
	return m
}

// readRoutes adds the GET routes.
func readRoutes(m *http.ServeMux, bus *boxcar.Bus, get func(string, func(*http.Request) (any, error))) {
	ctx := func(r *http.Request) context.Context { return r.Context() }
	get("/api/status", func(r *http.Request) (any, error) {
		st, err := bus.Stats(ctx(r))
		if err != nil {
			return nil, err
		}
		h, err := bus.Health(ctx(r))
		return map[string]any{"stats": st, "health": h}, err
	})
	m.HandleFunc("GET /api/health", func(w http.ResponseWriter, r *http.Request) {
		h, err := bus.Health(r.Context())
		if err != nil {
			answer(w, nil, err)
			return
		}
		code := http.StatusOK
		if h.State != boxcar.HealthOK {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, h)
	})
	get("/api/subscribers", func(r *http.Request) (any, error) {
		subs, err := bus.Subscribers(ctx(r))
		return map[string]any{"items": subs}, err
	})
	get("/api/subscribers/{name}", func(r *http.Request) (any, error) {
		subs, err := bus.Subscribers(ctx(r))
		for _, s := range subs {
			if s.Name == r.PathValue("name") {
				return s, nil
			}
		}
		return nil, errors.Join(err, fmt.Errorf("subscriber %q: %w", r.PathValue("name"), boxcar.ErrNotFound))
	})
	get("/api/subscribers/{name}/replay", func(r *http.Request) (any, error) { return bus.ReplayProgress(ctx(r), r.PathValue("name")) })
	get("/api/deadletters", func(r *http.Request) (any, error) { return deadLetters(bus, r) })
	get("/api/deadletters/{seq}", func(r *http.Request) (any, error) {
		seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: seq: %v", boxcar.ErrInvalidConfig, err)
		}
		return bus.DeadLetter(ctx(r), seq)
	})
	get("/api/outbox", func(r *http.Request) (any, error) {
		after, _ := strconv.ParseInt(r.URL.Query().Get("after"), 10, 64)
		limit := intParam(r, "limit", 100)
		items, err := bus.OutboxPending(ctx(r), after, limit)
		return map[string]any{"items": items}, err
	})
	get("/api/outbox/dead", func(r *http.Request) (any, error) {
		after, _ := strconv.ParseInt(r.URL.Query().Get("after_seq"), 10, 64)
		items, total, err := bus.OutboxDeadLetters(ctx(r), after, r.URL.Query().Get("after_id"), intParam(r, "limit", 100))
		return map[string]any{"items": items, "total": total}, err
	})
}

func subscriberWrite(bus *boxcar.Bus, r *http.Request, by string) (any, error) {
	name, ctx := r.PathValue("name"), r.Context()
	var b struct {
		Until    *time.Time
		Why      string
		From     *boxcar.ReplayFrom
		NoDedupe bool `json:"no_dedupe"`
	}
	if err := decode(r, &b); err != nil {
		return nil, err
	}
	ok := map[string]bool{"ok": true}
	switch r.PathValue("action") {
	case "pause":
		until := time.Time{}
		if b.Until != nil {
			until = *b.Until
		}
		return ok, bus.PauseSubscriber(ctx, name, until, by, b.Why)
	case "resume":
		return ok, bus.ResumeSubscriber(ctx, name, by, b.Why)
	case "retire":
		return ok, bus.RetireSubscriber(ctx, name, by, b.Why)
	case "replay":
		if b.From == nil {
			return nil, fmt.Errorf("%w: replay: no from", boxcar.ErrInvalidConfig)
		}
		return bus.Replay(ctx, boxcar.ReplayRequest{Subscriber: name, From: *b.From, NoDedupe: b.NoDedupe, By: by, Why: b.Why})
	}
	return nil, fmt.Errorf("no route: %w", boxcar.ErrNotFound)
}

func deadLetters(bus *boxcar.Bus, r *http.Request) (any, error) {
	q := r.URL.Query()
	f := boxcar.DeadLetterFilter{Subscriber: q.Get("subscriber"), Type: q.Get("type"), Key: q.Get("key"), Reason: q.Get("reason"),
		State: boxcar.DeadLetterState(q.Get("state")), Limit: intParam(r, "limit", 0)}
	f.After, _ = strconv.ParseUint(q.Get("after"), 10, 64)
	items, next, err := bus.DeadLetters(r.Context(), f)
	return map[string]any{"items": items, "next": next}, err
}

func deadLetterWrite(bus *boxcar.Bus, r *http.Request, by string) (any, error) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: seq: %v", boxcar.ErrInvalidConfig, err)
	}
	var b struct{ Why string }
	if err := decode(r, &b); err != nil {
		return nil, err
	}
	switch r.PathValue("action") {
	case "redrive":
		return bus.Redrive(r.Context(), boxcar.RedriveRequest{Seq: seq, By: by, Why: b.Why})
	case "discard":
		done, err := bus.Discard(r.Context(), seq, by, b.Why)
		return map[string]bool{"discarded": done}, err
	}
	return nil, fmt.Errorf("no route: %w", boxcar.ErrNotFound)
}

func intParam(r *http.Request, name string, def int) int {
	if n, err := strconv.Atoi(r.URL.Query().Get(name)); err == nil {
		return n
	}
	return def
}

// decode reads a JSON body, refusing unknown fields as the contract says.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body: %v", boxcar.ErrInvalidConfig, err)
	}
	return nil
}

func answer(w http.ResponseWriter, v any, err error) {
	if err == nil {
		writeJSON(w, http.StatusOK, v)
		return
	}
	status, code := http.StatusInternalServerError, "internal"
	switch {
	case errors.Is(err, boxcar.ErrInvalidConfig), errors.Is(err, boxcar.ErrInvalidEvent):
		status, code = http.StatusBadRequest, "invalid"
	case errors.Is(err, boxcar.ErrNotFound):
		status, code = http.StatusNotFound, "not_found"
	case errors.Is(err, boxcar.ErrReadOnly):
		status, code = http.StatusConflict, "read_only"
	case errors.Is(err, boxcar.ErrClosed):
		status, code = http.StatusServiceUnavailable, "closed"
	}
	writeErr(w, status, code, err.Error())
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"error": msg, "code": code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
