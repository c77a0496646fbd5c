package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/schema"
)

// schemaEventType is the schema stage's event type: not eventType, so that
// the warm-up's random payloads (of eventType) pass unvalidated.
const schemaEventType = "shop.order_placed"

// orderSchema is a typical event schema: a closed object, required
// fields, bounds, an enum and an array of closed objects.
const orderSchema = `{
  "type": "object",
  "additionalProperties": false,
  "required": ["order_id", "customer", "currency", "items", "total"],
  "properties": {
    "order_id": {"type": "string", "minLength": 1, "maxLength": 64},
    "customer": {"type": "string", "minLength": 1},
    "currency": {"enum": ["EUR", "USD", "GBP"]},
    "total":    {"type": "number", "minimum": 0},
    "items": {
      "type": "array", "minItems": 1, "maxItems": 100,
      "items": {
        "type": "object",
        "additionalProperties": false,
        "required": ["sku", "qty", "price"],
        "properties": {
          "sku":   {"type": "string", "maxLength": 32},
          "qty":   {"type": "integer", "minimum": 1},
          "price": {"type": "number", "minimum": 0}
        }
      }
    },
    "note": {"type": "string"}
  }
}`

// orderPayloads returns 64 JSON orders that orderSchema accepts, each
// padded (in "note") to o.payload bytes where that is larger than the
// order itself.
func orderPayloads(size int) [][]byte {
	r := rand.New(rand.NewPCG(3, 4))
	type item struct {
		SKU   string  `json:"sku"`
		Qty   int     `json:"qty"`
		Price float64 `json:"price"`
	}
	type order struct {
		OrderID  string  `json:"order_id"`
		Customer string  `json:"customer"`
		Currency string  `json:"currency"`
		Items    []item  `json:"items"`
		Total    float64 `json:"total"`
		Note     string  `json:"note,omitempty"`
	}
	var out [][]byte
	for i := range 64 {
		o := order{OrderID: fmt.Sprintf("o-%06d", i), Customer: fmt.Sprintf("customer-%d", r.IntN(10_000)), Currency: "EUR"}
		for j := range 1 + r.IntN(3) {
			it := item{SKU: fmt.Sprintf("SKU-%d-%d", i, j), Qty: 1 + r.IntN(5), Price: float64(r.IntN(10_000)) / 100}
			o.Items = append(o.Items, it)
			o.Total += float64(it.Qty) * it.Price
		}
		b, _ := json.Marshal(o)
		if pad := size - len(b) - len(`,"note":""`); pad > 0 {
			o.Note = strings.Repeat("x", pad)
			b, _ = json.Marshal(o)
		}
		out = append(out, b)
	}
	return out
}

// schemaSetting is one side of the schema stage.
type schemaSetting struct {
	label   string
	schemas bool
	rates   []float64 // tx/s, one per round
}

// benchSchema measures what validation at publish costs: the rate of
// Bus.Tx + PublishTx (one app row and one event each, flat out, the relay
// beside) with the same JSON payloads on a bus without Config.Schemas and
// on one whose Config.Schemas is a schema.Registry holding the payloads'
// schema, each round on a fresh bus and database, the two alternating from
// round to round; and the Registry's ValidateEvent alone, on one
// goroutine.
func benchSchema(ctx context.Context, dir string, w *workload, rep *report) error {
	o := w.o
	n := o.schemaEvents
	payloads := orderPayloads(o.payload)
	settings := []*schemaSetting{{label: "no schema"}, {label: "schema validated", schemas: true}}
	for round := range o.rounds {
		order := settings
		if round%2 == 1 {
			order = []*schemaSetting{settings[1], settings[0]}
		}
		for _, s := range order {
			sub := filepath.Join(dir, fmt.Sprintf("%s%d", strings.ReplaceAll(s.label, " ", "-"), round+1))
			rate, err := s.produce(ctx, sub, w, payloads, n)
			if err != nil {
				return fmt.Errorf("%s: %w", s.label, err)
			}
			tidy(sub, o.keep)
			s.rates = append(s.rates, rate)
			log.Printf("schema round %d: %-16s Bus.Tx + PublishTx %8.0f tx/s (%.1f µs per event)", round+1, s.label, rate, 1e6/rate)
			time.Sleep(500 * time.Millisecond)
		}
	}
	validate, err := validateCost(ctx, filepath.Join(dir, "validate"), o, payloads)
	if err != nil {
		return err
	}
	tidy(filepath.Join(dir, "validate"), o.keep)

	bare, checked := median(settings[0].rates), median(settings[1].rates)
	for _, s := range settings {
		baseline := ""
		if s.schemas {
			baseline = fmt.Sprintf("%.2f× no schema (%+.1f µs per event)", checked/bare, 1e6/checked-1e6/bare)
		}
		rep.add(row{
			stage:    "schema",
			what:     "Bus.Tx + PublishTx, " + s.label,
			value:    fmt.Sprintf("%s tx/s · %.1f µs per event", num(median(s.rates)), 1e6/median(s.rates)),
			baseline: baseline,
			detail: fmt.Sprintf("median of %d runs of %s tx (%s tx/s), %d writers, one app row and one %d-byte JSON event each, the same payloads; a fresh bus each run, the two alternating; µs per event is wall time over the run",
				o.rounds, num(float64(n)), joinNums(s.rates), o.writers, o.payload),
		})
	}
	rep.add(row{
		stage:  "schema",
		what:   "Registry.ValidateEvent alone",
		value:  fmt.Sprintf("%.1f µs per event", validate.Seconds()*1e6),
		detail: "one goroutine, the same payloads against the compiled schema in memory: the CPU the registry adds to PublishTx (JSON parse + schema run), no database",
	})
	return nil
}

// produce opens a bus in dir (with the schema in its registry if s.schemas)
// and returns the rate of n Bus.Tx + PublishTx calls, after a warm-up.
func (s *schemaSetting) produce(ctx context.Context, dir string, w *workload, payloads [][]byte, n int) (float64, error) {
	o := w.o
	db, err := openDB(dir, o.sync)
	if err != nil {
		return 0, err
	}
	cfg := boxcar.Config{Dir: filepath.Join(dir, "nats"), Logger: o.logger()}
	if s.schemas {
		reg, err := registryFor(ctx, db)
		if err != nil {
			db.Close()
			return 0, err
		}
		cfg.Schemas = reg
	}
	bus, err := boxcar.Open(ctx, db, cfg)
	if err != nil {
		db.Close()
		return 0, err
	}
	e := &env{dir: dir, db: db, bus: bus}
	defer e.close()
	if err := e.warmUp(ctx, w); err != nil {
		return 0, err
	}
	if _, err := publishOrders(ctx, bus, w, payloads, 2000); err != nil {
		return 0, err
	}
	if err := e.waitRelayed(ctx, time.Minute); err != nil {
		return 0, err
	}
	took, err := publishOrders(ctx, bus, w, payloads, n)
	if err != nil {
		return 0, err
	}
	return float64(n) / took.Seconds(), nil
}

// registryFor opens the registry in db with orderSchema registered.
func registryFor(ctx context.Context, db *sql.DB) (*schema.Registry, error) {
	reg, err := schema.NewRegistry(ctx, db)
	if err != nil {
		return nil, err
	}
	if _, _, err := reg.Register(ctx, schemaEventType, []byte(orderSchema)); err != nil {
		return nil, err
	}
	return reg, nil
}

// publishOrders runs n transactions on o.writers goroutines, each an app
// row and one order event, and returns the time from the first start to
// the last commit.
func publishOrders(ctx context.Context, bus *boxcar.Bus, w *workload, payloads [][]byte, n int) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, w.o.writers)
	start := time.Now()
	for g := range w.o.writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				key, data := w.keys[r.IntN(len(w.keys))], payloads[i%len(payloads)]
				err := bus.Tx(ctx, func(tx *sql.Tx) error {
					if _, err := tx.ExecContext(ctx, insertOrder, key, data); err != nil {
						return err
					}
					return bus.PublishTx(ctx, tx, boxcar.Event{Type: schemaEventType, Key: key, Data: data})
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	close(errs)
	return took, <-errs
}

// validateCost is the mean time of one ValidateEvent of the payloads, over
// a second's worth of calls.
func validateCost(ctx context.Context, dir string, o options, payloads [][]byte) (time.Duration, error) {
	db, err := openDB(dir, o.sync)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	reg, err := registryFor(ctx, db)
	if err != nil {
		return 0, err
	}
	calls := 0
	start := time.Now()
	for time.Since(start) < time.Second {
		for _, p := range payloads {
			if _, err := reg.ValidateEvent(schemaEventType, 0, p); err != nil {
				return 0, err
			}
		}
		calls += len(payloads)
	}
	return time.Since(start) / time.Duration(calls), nil
}
