package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/admin/client"
	"github.com/boxcar-bus/boxcar/sqlite"
)

// backend is what the commands ask of the app: its admin API (online) or
// its files (offline, read-only). Every command is written once, on it.
// Its methods are the admin API's routes (admin/client has the same ones).
type backend interface {
	Status(ctx context.Context) (client.Status, error)
	Health(ctx context.Context) (boxcar.Health, error)
	Subscribers(ctx context.Context) ([]boxcar.SubscriberInfo, error)
	Subscriber(ctx context.Context, name string) (boxcar.SubscriberInfo, error)
	Pause(ctx context.Context, name string, until time.Time, why string) error
	Resume(ctx context.Context, name, why string) error
	Retire(ctx context.Context, name, why string) error
	Replay(ctx context.Context, name string, from boxcar.ReplayFrom, noDedupe bool, why string) (boxcar.ReplayStatus, error)
	ReplayProgress(ctx context.Context, name string) (boxcar.ReplayStatus, error)
	DeadLetters(ctx context.Context, f boxcar.DeadLetterFilter) ([]boxcar.DeadLetter, uint64, error)
	DeadLetter(ctx context.Context, seq uint64) (boxcar.DeadLetter, error)
	Redrive(ctx context.Context, seq uint64, why string) (boxcar.RedriveResult, error)
	RedriveAll(ctx context.Context, subscriber, key, why string) (boxcar.RedriveResult, error)
	Discard(ctx context.Context, seq uint64, why string) (bool, error)
	OutboxPending(ctx context.Context, after int64, limit int) ([]boxcar.OutboxEvent, error)
	OutboxDead(ctx context.Context, afterSeq int64, afterID string, limit int) ([]boxcar.OutboxDeadLetter, int, bool, error)
	// Where says what it reads: the URL, or the files.
	Where() string
	Close() error
}

// errCannotOpen marks a failure to open the app's files.
var errCannotOpen = errors.New("cannot open the app's files")

// open returns the backend the flags name. A write command (write) with
// the app down fails at once, before the files are opened.
func (c *cli) open(ctx context.Context, write bool) (backend, error) {
	m, err := c.mode()
	if err != nil {
		return nil, err
	}
	if m == offline {
		if write {
			return nil, errOffline
		}
		return openOffline(ctx, c.conn)
	}
	u, err := url.Parse(c.conn.url)
	if err == nil {
		c.tokenInClear(u)
	}
	cl, err := client.New(c.conn.url, client.Options{Token: c.conn.token, Operator: c.conn.operator, HTTPClient: c.httpClient()})
	if err != nil {
		return nil, fmt.Errorf("%w: --url: %w", errUsage, err)
	}
	return onlineBackend{cl}, nil
}

// onlineBackend is the admin API of the running app.
type onlineBackend struct{ *client.Client }

func (o onlineBackend) Where() string { return o.URL() }
func (o onlineBackend) Close() error {
	o.CloseIdleConnections()
	return nil
}

// offlineBackend reads the files of an app that is down with
// boxcar.Inspect.
type offlineBackend struct {
	bus   *boxcar.Bus
	db    *sql.DB
	where string
}

// openOffline opens the app's database and store for reading.
func openOffline(ctx context.Context, cf connFlags) (*offlineBackend, error) {
	// sqlite.Open creates a missing file: refuse it first.
	fi, err := os.Stat(cf.db)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: --db %s: %w (give the app's existing database file)", errCannotOpen, cf.db, err)
	case fi.IsDir():
		return nil, fmt.Errorf("%w: --db %s is a directory: give the app's database file", errCannotOpen, cf.db)
	}
	db, err := sqlite.Open(cf.db)
	if err != nil {
		return nil, fmt.Errorf("%w: open --db %s: %w", errCannotOpen, cf.db, err)
	}
	cfg := boxcar.Config{Dir: cf.dir, Stream: cf.stream, SubjectPrefix: cf.subjectPrefix, StoreKey: cf.storeKey, StoreCipher: cf.storeCipher}
	bus, err := boxcar.Inspect(ctx, db, cfg)
	if err != nil {
		db.Close()
		if errors.Is(err, boxcar.ErrDirLocked) {
			return nil, fmt.Errorf("%w: --dir %s is locked: the app is running; ask it through its admin handler (--url) instead: %w", errCannotOpen, cf.dir, err)
		}
		return nil, fmt.Errorf("%w: inspect --db %s --dir %s: %w", errCannotOpen, cf.db, cf.dir, err)
	}
	return &offlineBackend{bus: bus, db: db, where: fmt.Sprintf("the files %s and %s (the app is down)", cf.db, cf.dir)}, nil
}

func (o *offlineBackend) Where() string { return o.where }

// Close closes the inspected bus, then the database.
func (o *offlineBackend) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return errors.Join(o.bus.Close(ctx), o.db.Close())
}

func (o *offlineBackend) Status(ctx context.Context) (client.Status, error) {
	st, err := o.bus.Stats(ctx)
	if err != nil {
		return client.Status{}, err
	}
	h, err := o.bus.Health(ctx)
	return client.Status{Stats: st, Health: h}, err
}

func (o *offlineBackend) Health(ctx context.Context) (boxcar.Health, error) { return o.bus.Health(ctx) }

func (o *offlineBackend) Subscribers(ctx context.Context) ([]boxcar.SubscriberInfo, error) {
	return o.bus.Subscribers(ctx)
}

func (o *offlineBackend) Subscriber(ctx context.Context, name string) (boxcar.SubscriberInfo, error) {
	subs, err := o.bus.Subscribers(ctx)
	if err != nil {
		return boxcar.SubscriberInfo{}, err
	}
	for _, s := range subs {
		if s.Name == name {
			return s, nil
		}
	}
	return boxcar.SubscriberInfo{}, fmt.Errorf("boxcar: subscriber %q: %w: it never ran on this database", name, boxcar.ErrNotFound)
}

func (o *offlineBackend) ReplayProgress(ctx context.Context, name string) (boxcar.ReplayStatus, error) {
	return o.bus.ReplayProgress(ctx, name)
}

func (o *offlineBackend) DeadLetters(ctx context.Context, f boxcar.DeadLetterFilter) ([]boxcar.DeadLetter, uint64, error) {
	return o.bus.DeadLetters(ctx, f)
}

func (o *offlineBackend) DeadLetter(ctx context.Context, seq uint64) (boxcar.DeadLetter, error) {
	return o.bus.DeadLetter(ctx, seq)
}

func (o *offlineBackend) OutboxPending(ctx context.Context, after int64, limit int) ([]boxcar.OutboxEvent, error) {
	return o.bus.OutboxPending(ctx, after, limit)
}

func (o *offlineBackend) OutboxDead(ctx context.Context, afterSeq int64, afterID string, limit int) ([]boxcar.OutboxDeadLetter, int, bool, error) {
	return o.bus.OutboxDeadLetters(ctx, afterSeq, afterID, limit)
}

// The writes: the files of an app that is down are read-only.

func (o *offlineBackend) Pause(context.Context, string, time.Time, string) error { return errOffline }
func (o *offlineBackend) Resume(context.Context, string, string) error           { return errOffline }
func (o *offlineBackend) Retire(context.Context, string, string) error           { return errOffline }
func (o *offlineBackend) Replay(context.Context, string, boxcar.ReplayFrom, bool, string) (boxcar.ReplayStatus, error) {
	return boxcar.ReplayStatus{}, errOffline
}
func (o *offlineBackend) Redrive(context.Context, uint64, string) (boxcar.RedriveResult, error) {
	return boxcar.RedriveResult{}, errOffline
}
func (o *offlineBackend) RedriveAll(context.Context, string, string, string) (boxcar.RedriveResult, error) {
	return boxcar.RedriveResult{}, errOffline
}
func (o *offlineBackend) Discard(context.Context, uint64, string) (bool, error) {
	return false, errOffline
}
