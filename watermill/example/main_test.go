package main

import (
	"bytes"
	"context"
	"testing"

	"go.uber.org/goleak"
)

// The program runs whole, on a fresh directory, and mails one invoice per
// order, in order; nothing it started is left running.
func TestRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	var out bytes.Buffer
	if err := run(context.Background(), t.TempDir(), &out); err != nil {
		t.Fatal(err)
	}
	want := `mail: invoice for order-1 (order order-1)
mail: invoice for order-2 (order order-2)
mail: invoice for order-3 (order order-3)
`
	if out.String() != want {
		t.Fatalf("output:\n%s\nwant:\n%s", out.String(), want)
	}
}
