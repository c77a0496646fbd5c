package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"sync/atomic"

	"github.com/mattn/go-sqlite3"
)

// Shielding a connection from cancellation.
//
// When a statement's context is canceled while it runs, the driver calls
// sqlite3_interrupt, and SQLite answers an interrupted INSERT, UPDATE or
// DELETE inside a transaction by rolling back the whole transaction. When
// one transaction holds the work of several callers (Boxcar's group
// commit), one caller's canceled context would undo the others' work. And
// for every statement run with a cancelable context the driver starts a
// goroutine to wait for the cancel.
//
// A shielded connection checks the context before each statement and then
// runs it with the cancel removed: a canceled context still stops the next
// statement, never one already running. Connections from Open can be
// shielded (Shield); the others cannot.

// driverWrap opens conns around the driver's connections.
type driverWrap struct{ *sqlite3.SQLiteDriver }

func (d driverWrap) Open(dsn string) (driver.Conn, error) {
	c, err := d.SQLiteDriver.Open(dsn)
	if err != nil {
		return nil, err
	}
	return &conn{SQLiteConn: c.(*sqlite3.SQLiteConn)}, nil
}

// conn is the driver's connection with a shield switch. Every method not
// defined here is the driver's.
type conn struct {
	*sqlite3.SQLiteConn
	shielded atomic.Bool
}

// uncancel returns the context a statement runs with.
func (c *conn) uncancel(ctx context.Context) (context.Context, error) {
	if !c.shielded.Load() || ctx.Done() == nil {
		return ctx, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	ctx, err := c.uncancel(ctx)
	if err != nil {
		return nil, err
	}
	return c.SQLiteConn.ExecContext(ctx, query, args)
}

func (c *conn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	ctx, err := c.uncancel(ctx)
	if err != nil {
		return nil, err
	}
	return c.SQLiteConn.QueryContext(ctx, query, args)
}

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	ctx, err := c.uncancel(ctx)
	if err != nil {
		return nil, err
	}
	return c.SQLiteConn.BeginTx(ctx, opts)
}

func (c *conn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	s, err := c.SQLiteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &stmt{SQLiteStmt: s.(*sqlite3.SQLiteStmt), c: c}, nil
}

// stmt is a prepared statement of a conn, shielded with it.
type stmt struct {
	*sqlite3.SQLiteStmt
	c *conn
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	ctx, err := s.c.uncancel(ctx)
	if err != nil {
		return nil, err
	}
	return s.SQLiteStmt.ExecContext(ctx, args)
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	ctx, err := s.c.uncancel(ctx)
	if err != nil {
		return nil, err
	}
	return s.SQLiteStmt.QueryContext(ctx, args)
}

// Shield is the switch of one connection.
type Shield struct{ c *conn }

// ShieldOf returns the shield switch of c, a connection of a database from
// Open, or false for other databases. The switch stays valid while c is
// open; it starts off.
func ShieldOf(c *sql.Conn) (*Shield, bool) {
	var sh *Shield
	c.Raw(func(dc any) error {
		if cc, ok := dc.(*conn); ok {
			sh = &Shield{c: cc}
		}
		return nil
	})
	return sh, sh != nil
}

// Set turns the shield on or off for the statements that follow. A nil
// Shield does nothing.
func (s *Shield) Set(on bool) {
	if s != nil {
		s.c.shielded.Store(on)
	}
}
