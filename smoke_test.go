package boxcar

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar/sqlite"
)

func TestSmoke(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.Exec(`CREATE TABLE seen(id TEXT PRIMARY KEY, k TEXT)`)
	bus, err := Open(ctx, db, Config{Dir: filepath.Join(dir, "nats")})
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close(ctx)
	_, err = bus.Subscribe(ctx, "s1", TxHandler(func(ctx context.Context, tx *sql.Tx, m Message) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO seen VALUES(?, ?)`, m.ID, m.Key)
		return err
	}), SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := 0; i < 2000; i++ {
		if err := bus.Publish(ctx, Event{Type: "user.signed_up", Key: fmt.Sprint("k", i%10), Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	for {
		var n int
		db.QueryRow(`SELECT count(*) FROM seen`).Scan(&n)
		if n == 2000 {
			break
		}
		if time.Since(start) > 20*time.Second {
			st, _ := bus.Stats(ctx)
			t.Fatalf("seen %d, stats %+v", n, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Log(time.Since(start))
}
