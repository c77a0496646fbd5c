package schema_test

import (
	"os"
	"strings"
	"testing"
)

// The README's Schemas section holds example_bus_test.go word for word, so
// that the snippet there compiles and runs.
func TestReadmeHoldsTheExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile("example_bus_test.go")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```go\n"+string(example)+"```\n") {
		t.Fatal("README.md's Schemas section differs from schema/example_bus_test.go: copy the file into the section's go block")
	}
}
