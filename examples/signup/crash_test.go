package signup_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/boxcartest"
	"github.com/boxcar-bus/boxcar/examples/signup"
)

// The workload: item i is user i%users's signup (the first round of items),
// then an email change per round; users >= the kit's Writers, so a user's
// change always comes after its signup, and its changes in order.
func userID(u int) string { return fmt.Sprintf("u%05d", u) }

func emailOf(u, version int) string { return fmt.Sprintf("user%d+v%d@example.com", u, version) }

// The billing service under SIGKILLs: the auth service's own SignUp and
// ChangeEmail publish, billing's own handler consumes. Its invariant: every
// user has exactly one subscription, whose invoice address is the user's
// current email (a lost, duplicated or reordered email change leaves a
// stale one), and no subscription without its user.
//
// The CI run is small; BOXCAR_CRASH_FULL=1 is the full run of RESULTS.md
// (the environment, not a flag: the child processes must build the same
// Config, and they inherit the environment).
func TestBillingSurvivesCrashes(t *testing.T) {
	items, kills := 3000, 5
	if os.Getenv("BOXCAR_CRASH_FULL") != "" {
		items, kills = 100_000, 200
	}
	users := items / 3
	res := boxcartest.Crash(t, boxcartest.Config{
		Setup: func(ctx context.Context, db *sql.DB) error {
			_, err := db.ExecContext(ctx, signup.Schema)
			return err
		},
		Subscribers: []boxcartest.Subscriber{
			{Name: signup.BillingSubscriber, Tx: signup.Billing{}.Handle, Options: signup.BillingOptions()},
		},
		Publish: func(ctx context.Context, bus *boxcar.Bus, tx *sql.Tx, i int) error {
			u, version := i%users, i/users
			if version == 0 {
				return signup.SignUp(ctx, bus, tx, userID(u), emailOf(u, 0))
			}
			return signup.ChangeEmail(ctx, bus, tx, userID(u), emailOf(u, version))
		},
		Check: func(ctx context.Context, db *sql.DB) error {
			var users, subscriptions, wrong int
			err := db.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM subscriptions),
				(SELECT count(*) FROM users u LEFT JOIN subscriptions s ON s.user_id = u.id WHERE s.user_id IS NULL OR s.email != u.email)`).Scan(&users, &subscriptions, &wrong)
			if err != nil {
				return err
			}
			if users != subscriptions || wrong != 0 {
				return fmt.Errorf("%d users, %d subscriptions, %d users without a subscription at their current email", users, subscriptions, wrong)
			}
			return nil
		},
		Items:        items,
		Kills:        kills,
		DrainTimeout: 5 * time.Minute,
	})
	if res.Items != items || res.Kills < kills {
		t.Fatalf("stopped short: %s", res)
	}
}
