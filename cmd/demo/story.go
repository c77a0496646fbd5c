package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	_ "github.com/mattn/go-sqlite3" // the naive side's and the checker's plain SQLite

	"github.com/boxcar-bus/boxcar/examples/signup"
)

// The article's signup story, shared by both sides: the auth service owns
// users; the email service sends a welcome email through an external
// provider; analytics counts signups; billing keeps a subscription row with
// the address to send invoices to.

const (
	typeSignedUp     = signup.TypeSignedUp
	typeEmailChanged = signup.TypeEmailChanged
)

// userEvent is the payload of both event types.
type userEvent = signup.UserEvent

func userID(i int) string { return fmt.Sprintf("u%05d", i) }

func emailOf(i, version int) string {
	if version == 0 {
		return fmt.Sprintf("user%d@example.com", i)
	}
	return fmt.Sprintf("user%d+v%d@example.com", i, version)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// appSchema is the application's own tables, in the same SQLite file as
// Boxcar's (on the Boxcar side) so that a handler's writes commit with its
// dedupe row.
const appSchema = signup.Schema

// The services' SQL, the same on both sides (the Boxcar side's services are
// package signup's).
const (
	sqlInsertUser   = signup.InsertUserSQL
	sqlChangeEmail  = signup.ChangeEmailSQL
	sqlCountSignup  = signup.CountSignupSQL // not idempotent: run twice, it counts twice
	sqlSubscribe    = signup.SubscribeSQL
	sqlBillingEmail = signup.BillingEmailSQL
)

// mailbox is the email provider, an external system: every send request is
// appended to a log file with its idempotency key. The provider delivers one
// email per key, however often a key is sent (see readMail).
type mailbox struct {
	mu sync.Mutex
	f  *os.File
}

func openMailbox(dir string) (*mailbox, error) {
	f, err := os.OpenFile(filepath.Join(dir, "mail.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &mailbox{f: f}, nil
}

// send asks the provider to send template to user at address. The write
// reaches the kernel before send returns, so it survives a SIGKILL.
func (mb *mailbox) send(key, user, address, template string) error {
	mb.mu.Lock()
	defer mb.mu.Unlock()
	_, err := fmt.Fprintf(mb.f, "%s\t%s\t%s\t%s\n", key, user, address, template)
	return err
}

func (mb *mailbox) close() error { return mb.f.Close() }

// outcome is what the checker finds in a side's files once it is done.
type outcome struct {
	Users       int // committed signups (the auth database is the truth)
	NotWelcomed int // users the provider never emailed
	MailResent  int // send requests the provider dropped as repeats of a key
	NotBilled   int // users without a subscription row
	StaleEmail  int // subscriptions whose address is not the user's current one
	Counted     int // the analytics counter
}

// DoubleCounted is how many signups analytics counted more than once (or,
// when negative, never).
func (o outcome) DoubleCounted() int { return o.Counted - o.Users }

// check reads a side's database and mail log after its last process exited.
func check(ctx context.Context, dir string) (outcome, error) {
	var o outcome
	db, err := sql.Open("sqlite3", "file:"+filepath.Join(dir, "app.db")+"?mode=ro&_busy_timeout=5000")
	if err != nil {
		return o, err
	}
	defer db.Close()
	users, err := queryPairs(ctx, db, `SELECT id, email FROM users`)
	if err != nil {
		return o, fmt.Errorf("check: %w", err)
	}
	o.Users = len(users)
	billed, err := queryPairs(ctx, db, `SELECT user_id, email FROM subscriptions`)
	if err != nil {
		return o, fmt.Errorf("check: %w", err)
	}
	if err := db.QueryRowContext(ctx, `SELECT n FROM counters WHERE name = 'signups'`).Scan(&o.Counted); err != nil {
		return o, fmt.Errorf("check: counter: %w", err)
	}

	welcomed, resent, err := readMail(filepath.Join(dir, "mail.log"))
	if err != nil {
		return o, err
	}
	o.MailResent = resent
	for id, email := range users {
		if !welcomed[id] {
			o.NotWelcomed++
		}
		if b, ok := billed[id]; !ok {
			o.NotBilled++
		} else if b != email {
			o.StaleEmail++
		}
	}
	return o, nil
}

// readMail returns the users the provider sent a welcome email to, and how
// many requests it dropped as repeats of an idempotency key.
func readMail(path string) (welcomed map[string]bool, resent int, err error) {
	welcomed = map[string]bool{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return welcomed, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	keys := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if len(fields) != 4 {
			continue // a line torn by the crash: the provider never got it
		}
		if keys[fields[0]] {
			resent++
			continue
		}
		keys[fields[0]] = true
		if fields[3] == "welcome" {
			welcomed[fields[1]] = true
		}
	}
	return welcomed, resent, sc.Err()
}

// queryPairs reads a two-column query of strings into a map, first column
// to second.
func queryPairs(ctx context.Context, db *sql.DB, query string) (map[string]string, error) {
	rows, err := db.QueryContext(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	m := map[string]string{}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, rows.Err()
}
