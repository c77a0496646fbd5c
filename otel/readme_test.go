package boxcarotel_test

import (
	"os"
	"strings"
	"testing"
)

// The README's tracing example is example/main.go, word for word: the
// program compiles with the module (go vet ./... builds it) and its test
// runs it, so the README's copy does both too.
func TestReadmeExampleIsTheProgram(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	program, err := os.ReadFile("example/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "## Tracing with OpenTelemetry\n") || !strings.Contains(string(readme), "```go\n"+string(program)+"```\n") {
		t.Fatal("README.md's tracing example differs from otel/example/main.go: copy the file into the README's go block")
	}
}
