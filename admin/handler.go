package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/boxcar-bus/boxcar"
)

// MaxBodyBytes bounds the body of every write request (JSON or form): a
// larger one is refused with code "invalid" before anything is done.
const MaxBodyBytes = 64 << 10

// MinTokenLen is the shortest Options.Token or Options.ReadToken accepted.
// boxcar.NewSecret makes a token of 43 characters.
const MinTokenLen = 16

// Options configures the handler. Every field is optional.
type Options struct {
	// Token is the write credential: POST routes (API and page forms) need
	// it, as "Authorization: Bearer <Token>" on the API and in the token
	// field of the page's forms. Default "": the handler is read-only, and
	// every write is refused with 403. At least MinTokenLen printable ASCII
	// characters without spaces; boxcar.NewSecret makes one.
	Token string
	// ReadToken, if set, makes reads need a credential too: the API takes
	// "Authorization: Bearer <ReadToken or Token>", the page also takes it as
	// the password of HTTP Basic authentication (any user name), which
	// browsers ask for. Same rules as Token, and a different value.
	// Default "": reads are open to whoever reaches the handler.
	ReadToken string
	// Logger receives the audit log: one line at info level for every write
	// (operator, remote address, route, result), before its response is
	// written. Default: discard (the bus's own Config.Logger still records
	// who did what).
	Logger *slog.Logger
	// Metrics, if set, is served at GET /metrics, behind ReadToken like every
	// read: the hook for package metrics' handler (this package does not
	// import Prometheus). Default nil: no /metrics route.
	Metrics http.Handler
}

// validate checks the options; its errors name the field and the rule.
func (o Options) validate() error {
	for _, f := range []struct{ name, v string }{{"Token", o.Token}, {"ReadToken", o.ReadToken}} {
		if f.v == "" {
			continue
		}
		if len(f.v) < MinTokenLen {
			return fmt.Errorf("admin: Options.%s is %d characters: use at least %d (boxcar.NewSecret makes one)", f.name, len(f.v), MinTokenLen)
		}
		for i := 0; i < len(f.v); i++ {
			if c := f.v[i]; c <= ' ' || c > '~' {
				return fmt.Errorf("admin: Options.%s has a byte %q at %d: use printable ASCII without spaces (it travels in an HTTP header)", f.name, c, i)
			}
		}
	}
	if o.Token != "" && o.Token == o.ReadToken {
		return errors.New("admin: Options.ReadToken equals Options.Token: whoever may read could write; use two different secrets")
	}
	return nil
}

// handler serves one bus.
type handler struct {
	bus    *boxcar.Bus
	opts   Options
	log    *slog.Logger
	mux    *http.ServeMux
	flash  *flashes
	render *renderer
	// letterWrites serializes this handler's redrives and discards (see
	// redrive).
	letterWrites sync.Mutex
	// apiTurns and pageTurns hold a token for each API request, and each
	// page, reading letters now (letterTurn).
	apiTurns, pageTurns chan struct{}
}

// maxLetterReads is how many API requests read letters at once, and how
// many pages. A page of letters holds up to boxcar.MaxPageBytes of them, a
// letter up to the server's max payload (a set-aside outbox row, up to
// what was written by hand), and each is held again as JSON or HTML while
// it is written: without a bound, a burst of reads (which need no
// credential by default) would hold the app's memory. The pages have turns
// of their own, so that clients holding the API's do not take the status
// page away.
const maxLetterReads = 4

// The write deadlines of a turn: a client that stops reading the answer
// loses its turn by then. The API's pages of letters are up to ~12 MB of
// JSON; the HTML pages hold no payload but a letter's first 64 KiB.
const (
	apiTurnWrite  = time.Minute
	pageTurnWrite = 30 * time.Second
)

// letterTurn waits for one of the turns of pool, or until the client goes
// away, and gives the answer its write deadline; release gives the turn
// back.
func (h *handler) letterTurn(w http.ResponseWriter, r *http.Request, pool chan struct{}, write time.Duration) (release func(), err error) {
	select {
	case pool <- struct{}{}:
	case <-r.Context().Done():
		return nil, fmt.Errorf("admin: gave up waiting for a turn to read letters: %w", context.Cause(r.Context()))
	}
	// The server's WriteTimeout, if shorter, stays: it was set as the
	// request began. Without one, the server does not reset a deadline for
	// the connection's next request, so the connection closes after this
	// answer. A ResponseWriter that cannot take a deadline (a wrapper's)
	// leaves the turn bounded by the server's WriteTimeout only.
	srv, _ := r.Context().Value(http.ServerContextKey).(*http.Server)
	if srv == nil || srv.WriteTimeout <= 0 || srv.WriteTimeout > write {
		if err := http.NewResponseController(w).SetWriteDeadline(time.Now().Add(write)); err == nil && (srv == nil || srv.WriteTimeout <= 0) {
			w.Header().Set("Connection", "close")
		}
	}
	return func() { <-pool }, nil
}

// NewHandler returns the admin handler of bus: the JSON API under /api/
// (docs/ADMIN_API.md) and the status page at /. It returns an error for a
// nil bus or invalid Options, naming what to fix. Mount it with
// http.StripPrefix to serve it under a path.
func NewHandler(bus *boxcar.Bus, opts Options) (http.Handler, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if bus == nil {
		return nil, errors.New("admin: bus is nil: pass the *boxcar.Bus from boxcar.Open or boxcar.Inspect")
	}
	render, err := newRenderer()
	if err != nil {
		return nil, fmt.Errorf("admin: templates: %w", err)
	}
	h := &handler{bus: bus, opts: opts, log: opts.Logger, mux: http.NewServeMux(), flash: newFlashes(), render: render,
		apiTurns: make(chan struct{}, maxLetterReads), pageTurns: make(chan struct{}, maxLetterReads)}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.routeAPI()
	h.routePage()
	if opts.Metrics != nil {
		h.mux.Handle("GET /metrics", h.pageRead(opts.Metrics.ServeHTTP))
	}
	return h, nil
}

// ServeHTTP sets the headers every response carries, then routes.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	// The page replaces it with one that allows its own style and script.
	hd.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
	h.mux.ServeHTTP(w, r)
}
