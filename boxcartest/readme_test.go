package boxcartest

import (
	"os"
	"strings"
	"testing"
)

// The README's crash-test example is example_crash_test.go, word for word:
// it compiles and runs with this package's tests, so the README's copy does
// too.
func TestReadmeExampleIsTheTest(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_crash_test.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "## Crash-test your own handlers\n") || !strings.Contains(string(readme), "```go\n"+string(example)+"```\n") {
		t.Fatal("README.md's crash-test example differs from boxcartest/example_crash_test.go: copy the file into the README's go block")
	}
}
