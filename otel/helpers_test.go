package boxcarotel_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/boxcar-bus/boxcar"
	boxcarotel "github.com/boxcar-bus/boxcar/otel"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// childEnv selects a child-process role: the test binary re-executes itself
// with it set, and TestMain runs the role instead of the tests.
const childEnv = "BOXCAROTEL_TEST_CHILD"

func TestMain(m *testing.M) {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	goleak.VerifyTestMain(m)
}

const appSchema = `CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY);`

// bundle is what a test needs: a database file, a bus on it traced into an
// in-memory recorder, and a tracer for the app's own spans.
type bundle struct {
	dir string
	db  *sql.DB
	bus *boxcar.Bus
	rec *tracetest.SpanRecorder
	tp  *sdktrace.TracerProvider
	app trace.Tracer
}

// setup opens a bus on a fresh SQLite file and embedded server, traced with
// cfg (its TracerProvider is the recorder's); everything is closed at the
// end of the test. dir, if not empty, is where the files are (for a test
// that reopens a crashed child's).
func setup(t *testing.T, dir string, cfg boxcarotel.Config, bcfg boxcar.Config) *bundle {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	b := &bundle{dir: dir, rec: tracetest.NewSpanRecorder()}
	b.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b.rec))
	b.app = b.tp.Tracer("app")
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	b.db = db
	if _, err := db.Exec(appSchema); err != nil {
		t.Fatal(err)
	}
	cfg.TracerProvider = b.tp
	bcfg.Dir = filepath.Join(dir, "nats")
	bcfg.Tracing = boxcarotel.New(cfg)
	bus, err := boxcar.Open(context.Background(), db, bcfg)
	if err != nil {
		t.Fatal(err)
	}
	b.bus = bus
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := bus.Close(ctx); err != nil {
			t.Errorf("close bus: %v", err)
		}
		db.Close()
		b.tp.Shutdown(ctx)
	})
	return b
}

// signUp commits a user row and its event in one transaction, in ctx.
func (b *bundle) signUp(t *testing.T, ctx context.Context, id string) {
	t.Helper()
	err := b.bus.Tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO users(id) VALUES (?)`, id); err != nil {
			return err
		}
		return b.bus.PublishTx(ctx, tx, boxcar.Event{Type: "user.signed_up", Key: id, Data: []byte(`{"plan":"free"}`)})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitSpans waits until ok holds for the ended spans, and returns them.
// The wait is a liveness bound, not a performance assertion.
func (b *bundle) waitSpans(t *testing.T, what string, ok func([]sdktrace.ReadOnlySpan) bool) []sdktrace.ReadOnlySpan {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		spans := b.rec.Ended()
		if ok(spans) {
			return spans
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s; spans:\n%s", what, describe(spans))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// named returns the spans called name, in the order they ended.
func named(spans []sdktrace.ReadOnlySpan, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// one returns the only span called name, or fails.
func one(t *testing.T, spans []sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	got := named(spans, name)
	if len(got) != 1 {
		t.Fatalf("%d spans %q, want 1; spans:\n%s", len(got), name, describe(spans))
	}
	return got[0]
}

// attr returns the value of the span's attribute k, and whether it has it.
func attr(s sdktrace.ReadOnlySpan, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// wantAttrs fails unless the span has each attribute with its value.
func wantAttrs(t *testing.T, s sdktrace.ReadOnlySpan, want ...attribute.KeyValue) {
	t.Helper()
	for _, kv := range want {
		v, ok := attr(s, kv.Key)
		if !ok || v != kv.Value {
			t.Errorf("span %q: attribute %s = %v (set %v), want %v", s.Name(), kv.Key, v.Emit(), ok, kv.Value.Emit())
		}
	}
}

// linked reports whether s links to sc.
func linked(s sdktrace.ReadOnlySpan, sc trace.SpanContext) bool {
	return slices.ContainsFunc(s.Links(), func(l sdktrace.Link) bool {
		return l.SpanContext.TraceID() == sc.TraceID() && l.SpanContext.SpanID() == sc.SpanID()
	})
}

func describe(spans []sdktrace.ReadOnlySpan) string {
	var b strings.Builder
	for _, s := range spans {
		fmt.Fprintf(&b, "  %s kind=%s trace=%s span=%s parent=%s links=%d status=%s\n", s.Name(), s.SpanKind(),
			s.SpanContext().TraceID(), s.SpanContext().SpanID(), s.Parent().SpanID(), len(s.Links()), s.Status().Code)
	}
	return b.String()
}

// traceparent is the W3C header of sc.
func traceparent(sc trace.SpanContext) string {
	return fmt.Sprintf("00-%s-%s-%s", sc.TraceID(), sc.SpanID(), sc.TraceFlags())
}
