package schema_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/boxcar-bus/boxcar/schema"
	"github.com/boxcar-bus/boxcar/sqlite"
)

func ExampleCheck() {
	v1, _ := schema.Parse([]byte(`{"type":"object","properties":{"email":{"type":"string"}},"required":["email"]}`))
	v2, _ := schema.Parse([]byte(`{"type":"object","properties":{"email":{"type":"string"},"age":{"type":"integer"}}}`))
	for _, c := range schema.Check(schema.Full, v2, []*schema.Schema{v1}) {
		fmt.Println(c.Direction, c.Path, c.Rule)
		fmt.Println(" ", c.Message)
	}
	// Output:
	// BACKWARD /properties/age property-added-to-open-content-model
	//   property `age` added to an open content model: v1 allows additional properties, so data written with v1 may already hold `age` with any value, which v2 rejects; declare it unconstrained ({}) in v2, or register under mode NONE if no stored event holds `age`; close models with additionalProperties:false from a type's first version so that optional properties can be added later
	// FORWARD /properties/email property-made-optional
	//   property `email` made optional: consumers on v1 require it, and data written with v2 may lack it
}

func ExampleSchema_Validate() {
	s, _ := schema.Parse([]byte(`{"type":"object","properties":{"age":{"type":"integer","minimum":0}}}`))
	err := s.Validate([]byte(`{"age":-1}`))
	var ve *schema.ValidationError
	if errors.As(err, &ve) {
		fmt.Println(ve.Path, "-", ve.Message)
	}
	// Output:
	// /age - minimum: got -1, want 0
}

func ExampleRegistry() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "boxcar-schema-example")
	defer os.RemoveAll(dir)
	db, _ := sqlite.Open(filepath.Join(dir, "app.db"))
	defer db.Close()
	reg, err := schema.NewRegistry(ctx, db)
	if err != nil {
		fmt.Println(err)
		return
	}
	closed := `{"type":"object","additionalProperties":false,"required":["email"],"properties":{"email":{"type":"string"}%s}}`
	v, created, _ := reg.Register(ctx, "user.signed_up", []byte(fmt.Sprintf(closed, "")))
	fmt.Println(v, created)
	// Adding an optional property to a closed model is backward-compatible.
	v, created, _ = reg.Register(ctx, "user.signed_up", []byte(fmt.Sprintf(closed, `,"plan":{"enum":["free","pro"]}`)))
	fmt.Println(v, created)
	// Registering v1 again is a no-op that names v1.
	v, created, _ = reg.Register(ctx, "user.signed_up", []byte(fmt.Sprintf(closed, "")))
	fmt.Println(v, created)
	// Dropping the required email is not.
	_, _, err = reg.Register(ctx, "user.signed_up", []byte(`{"type":"object","additionalProperties":false,"properties":{"plan":{"enum":["free","pro"]}}}`))
	var ie *schema.IncompatibleError
	if errors.As(err, &ie) {
		fmt.Printf("%s against v%d\n", ie.Changes[0].Rule, ie.Changes[0].Version)
	}
	latest, _ := reg.Latest(ctx, "user.signed_up")
	fmt.Println(latest.Validate([]byte(`{"email":"ada@example.com","plan":"pro"}`)))
	// Output:
	// 1 true
	// 2 true
	// 1 false
	// property-removed-from-closed-content-model against v2
	// <nil>
}
