package boxcarotel_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/boxcar-bus/boxcar"
	boxcarotel "github.com/boxcar-bus/boxcar/otel"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// The child roles.
const roleCrashAfterCommit = "crash-after-commit" // sign a user up; SIGKILL itself once the Tx commits, before the relay runs

const envDir = "BOXCAROTEL_TEST_DIR"

// spanRecord is a span as the child's exporter writes it, one JSON line each.
type spanRecord struct {
	Name   string `json:"name"`
	Trace  string `json:"trace"`
	Span   string `json:"span"`
	Parent string `json:"parent"`
}

func recordOf(name string, sc, parent trace.SpanContext) spanRecord {
	r := spanRecord{Name: name, Trace: sc.TraceID().String(), Span: sc.SpanID().String()}
	if parent.IsValid() {
		r.Parent = parent.SpanID().String()
	}
	return r
}

// fileExporter writes each span to a file as it ends (with a simple span
// processor: before End returns), so that what a process exported before it
// was killed is on disk for the parent to read.
type fileExporter struct {
	mu sync.Mutex
	f  *os.File
}

func (e *fileExporter) write(r spanRecord) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	b, _ := json.Marshal(r)
	_, err := e.f.Write(append(b, '\n'))
	return err
}

func (e *fileExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	for _, s := range spans {
		if err := e.write(recordOf(s.Name(), s.SpanContext(), s.Parent())); err != nil {
			return err
		}
	}
	return nil
}

func (e *fileExporter) Shutdown(ctx context.Context) error { return e.f.Close() }

// heldRelay is the child's Tracing: the module's, except that the relay's
// first publish waits for ever, so that the kill at ProbeAfterCommit always
// lands before the event is in the stream (the commit hook wakes the relay
// before the probe runs: without this the relay sometimes wins the race).
type heldRelay struct{ *boxcarotel.Tracing }

func (heldRelay) Publish(context.Context, []boxcar.Message) func(error) { select {} }

func runChild(role string) int {
	if role != roleCrashAfterCommit {
		fmt.Fprintln(os.Stderr, "child: unknown role", role)
		return 2
	}
	ctx := context.Background()
	dir := os.Getenv(envDir)
	f, err := os.OpenFile(filepath.Join(dir, "spans.jsonl"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	exp := &fileExporter{f: f}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sdktrace.NewSimpleSpanProcessor(exp)))
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err == nil {
		_, err = db.Exec(appSchema)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	var armed atomic.Bool
	bus, err := boxcar.Open(ctx, db, boxcar.Config{
		Dir:     filepath.Join(dir, "nats"),
		Tracing: heldRelay{boxcarotel.New(boxcarotel.Config{TracerProvider: tp})},
		Probe: func(p boxcar.Probe) {
			if p == boxcar.ProbeAfterCommit && armed.Load() {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 3
	}
	// The app's request span never ends (the process dies inside it):
	// write its context by hand.
	appCtx, request := tp.Tracer("app").Start(ctx, "POST /signup")
	if err := exp.write(recordOf("POST /signup", request.SpanContext(), trace.SpanContext{})); err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	armed.Store(true)
	err = bus.Tx(appCtx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(appCtx, `INSERT INTO users(id) VALUES ('u1')`); err != nil {
			return err
		}
		return bus.PublishTx(appCtx, tx, boxcar.Event{Type: "user.signed_up", Key: "u1"})
	})
	fmt.Println("not killed:", err)
	return 4
}

// readSpans reads the records the child exported.
func readSpans(t *testing.T, dir string) map[string]spanRecord {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "spans.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]spanRecord{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r spanRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("span file: %v", err)
		}
		out[r.Name] = r
	}
	return out
}

// Across a crash: the producer is SIGKILLed after its transaction committed
// and before its relay published the event. A new process (this one)
// publishes it and handles it: its publish and process spans link to the
// creation span context the dead process wrote, which is the child of the
// dead process's request span.
func TestCreationContextSurvivesACrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+roleCrashAfterCommit, envDir+"="+dir)
	out, err := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child was not killed at the probe (%v): %s", err, out)
	}
	before := readSpans(t, dir)
	app, create := before["POST /signup"], before["create user.signed_up"]
	if app.Span == "" || create.Span == "" {
		t.Fatalf("the child exported %v: want the request and the create span", before)
	}
	if create.Parent != app.Span || create.Trace != app.Trace {
		t.Fatalf("create span %+v is not the child of the request %+v", create, app)
	}

	b := setup(t, dir, boxcarotel.Config{}, boxcar.Config{})
	var handled atomic.Int64
	seen := make(chan string, 10)
	_, err = b.bus.Subscribe(ctx, "billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		handled.Add(1)
		seen <- m.Headers["traceparent"]
		return nil
	}), boxcar.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case h := <-seen:
		if want := "00-" + create.Trace + "-" + create.Span + "-01"; h != want {
			t.Fatalf("the handler saw traceparent %q, want the dead process's create span %q", h, want)
		}
	case <-ctx.Done():
		t.Fatal("the committed event was not handled after the crash")
	}
	spans := b.waitSpans(t, "the process span", func(s []sdktrace.ReadOnlySpan) bool { return len(named(s, "process user.signed_up")) == 1 })
	linksCreate := func(s sdktrace.ReadOnlySpan) bool {
		for _, l := range s.Links() {
			if l.SpanContext.TraceID().String() == create.Trace && l.SpanContext.SpanID().String() == create.Span {
				return true
			}
		}
		return false
	}
	publish := named(spans, "publish user.signed_up")
	if len(publish) != 1 || !linksCreate(publish[0]) {
		t.Fatalf("this process's publish spans %v: want one, linked to the dead process's create span %+v", describe(publish), create)
	}
	if p := one(t, spans, "process user.signed_up"); !linksCreate(p) {
		t.Fatalf("process span links %v: want the dead process's create span %+v", p.Links(), create)
	}
	if n := len(named(spans, "create user.signed_up")); n != 0 {
		t.Fatalf("%d create spans in the new process: the event was created once, before the crash", n)
	}
	if n := handled.Load(); n != 1 {
		t.Fatalf("handled %d times, want 1", n)
	}
}
