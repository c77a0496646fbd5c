package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"go.uber.org/goleak"
)

// span is what the test reads of stdouttrace's JSON.
type span struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	Links       []struct {
		SpanContext struct{ TraceID, SpanID string }
	}
}

// The program runs whole, on a fresh directory, and exports the five spans:
// the create span under the request, publish and process linked to it, the
// handler's span under process. Nothing it started is left running.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	var out bytes.Buffer
	if err := run(context.Background(), t.TempDir(), &out); err != nil {
		t.Fatal(err)
	}
	spans := map[string]span{}
	dec := json.NewDecoder(&out)
	for {
		var s span
		if err := dec.Decode(&s); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		spans[s.Name] = s
	}
	request, create, publish, process, handler := spans["POST /signup"], spans["create user.signed_up"], spans["publish user.signed_up"], spans["process user.signed_up"], spans["create subscription"]
	if len(spans) != 5 || request.SpanContext.SpanID == "" {
		t.Fatalf("spans %v: want the five", spans)
	}
	if create.Parent.SpanID != request.SpanContext.SpanID {
		t.Errorf("create span's parent %v, want the request %v", create.Parent, request.SpanContext)
	}
	for _, s := range []span{publish, process} {
		if len(s.Links) != 1 || s.Links[0].SpanContext != create.SpanContext {
			t.Errorf("%s links %v, want the create span %v", s.Name, s.Links, create.SpanContext)
		}
	}
	if handler.Parent.SpanID != process.SpanContext.SpanID {
		t.Errorf("the handler's span's parent %v, want the process span %v", handler.Parent, process.SpanContext)
	}
}
