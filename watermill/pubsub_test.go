package boxcarwm_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/tests"
	"go.uber.org/goleak"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/sqlite"
	boxcarwm "github.com/boxcar-bus/boxcar/watermill"
)

func TestMain(m *testing.M) {
	// Every bus is closed by its test's cleanup, and every Subscriber by the
	// suite: no goroutine of the adapter, of Boxcar or of the embedded
	// server may be left.
	goleak.VerifyTestMain(m)
}

// openBus opens a bus on a fresh SQLite file and embedded NATS store in
// t.TempDir(), closed at the end of t.
//
// Settings for test speed, none of which changes what the suite checks:
// SQLite's synchronous=NORMAL (no fsync per commit: durability across a
// power loss is not what a test can observe) for the app's connections and
// Boxcar's writer.
func openBus(t testing.TB) *boxcar.Bus {
	t.Helper()
	dir := t.TempDir()
	db, err := sqlite.Open(filepath.Join(dir, "app.db"))
	if err != nil {
		t.Fatal(err)
	}
	bus, err := boxcar.Open(context.Background(), db, boxcar.Config{
		Dir:         filepath.Join(dir, "nats"),
		Synchronous: sqlite.SyncNormal,
	})
	if err != nil {
		db.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := bus.Close(ctx); err != nil {
			t.Errorf("close bus: %v", err)
		}
		if err := db.Close(); err != nil {
			t.Errorf("close db: %v", err)
		}
	})
	return bus
}

// suiteConfig is the subscribers' configuration in the suite. The backoffs
// are short so that the suite's nack loops (up to 100 Nacks of one message
// in the long mode) run in seconds; the suite still waits for every
// redelivery it expects.
func suiteConfig(group string) boxcarwm.SubscriberConfig {
	return boxcarwm.SubscriberConfig{
		Group:      group,
		MinBackoff: 5 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
	}
}

// constructors returns the suite's constructors on bus. newGroup makes the
// group of a PubSubConstructor call; the ConsumerGroupPubSubConstructor uses
// the suite's group.
func constructors(bus *boxcar.Bus, newGroup func() string) (tests.PubSubConstructor, tests.ConsumerGroupPubSubConstructor) {
	withGroup := func(t *testing.T, group string) (message.Publisher, message.Subscriber) {
		pub, err := boxcarwm.NewPublisher(bus, boxcarwm.PublisherConfig{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		sub, err := boxcarwm.NewSubscriber(bus, suiteConfig(group), nil)
		if err != nil {
			t.Fatal(err)
		}
		// The suite closes what it makes, except in
		// TestPublishSubscribeInOrder, whose `defer
		// require.NoError(t, sub.Close())` closes the multiplied subscriber
		// before its Subscribe makes the instances. Close is idempotent.
		t.Cleanup(func() {
			if err := sub.Close(); err != nil {
				t.Errorf("close subscriber: %v", err)
			}
		})
		return pub, sub
	}
	return func(t *testing.T) (message.Publisher, message.Subscriber) {
		return withGroup(t, newGroup())
	}, withGroup
}

// sharedGroupFeatures are what the first run claims: every instance the
// PubSubConstructor makes is in the same consumer group, so instances share
// the messages of a topic.
var sharedGroupFeatures = tests.Features{
	// Each group is a durable Boxcar subscriber of the topic: two groups
	// each receive every message.
	ConsumerGroups: true,
	// An acked message's transaction committed with its dedupe row before
	// the event was acked in JetStream; a redelivery finds the row and never
	// reaches the consumer.
	ExactlyOnceDelivery: true,
	// Messages without a key metadata entry share the topic as their key,
	// and Boxcar handles one key in publish order, across retries and
	// across the instances sharing the group.
	GuaranteedOrder: true,
	// Not claimed, because it would weaken the test: this flag makes the
	// order test read from one instance. Without it the test reads from 10
	// instances sharing the group, and order holds there too. The
	// single-subscriber form runs in the second run (RequireSingleInstance).
	GuaranteedOrderWithSingleSubscriber: false,
	// The outbox, the stream and the durable consumers survive the
	// instances: a new instance of a group resumes where the last one
	// stopped.
	Persistent: true,
	// A new *group* receives every message the stream retains; a new
	// instance of the same group resumes the group instead, which is what
	// this run's constructor makes. The second run claims it.
	NewSubscriberReceivesOldMessages: false,
	// Not claimed: it takes a command that restarts an external broker.
	// The broker is embedded in the process; Boxcar's own tests (kill -9
	// of the process, restarts of the embedded server, the torture run)
	// cover restarts.
	RestartServiceCommand: nil,
	// Instances share work: the order and concurrency tests use 10 or 50
	// instances made by the constructor.
	RequireSingleInstance: false,
	// Not claimed: a Boxcar event carries its headers and data, not the Go
	// context it was published with (only GoChannel can).
	ContextPreserved: false,
}

// newGroupFeatures are what the second run claims: every instance the
// PubSubConstructor makes is a consumer group of its own.
var newGroupFeatures = tests.Features{
	ConsumerGroups:      true,
	ExactlyOnceDelivery: true,
	GuaranteedOrder:     true,
	// The order test reads from one instance here.
	GuaranteedOrderWithSingleSubscriber: true,
	Persistent:                          true,
	// A new group starts at the beginning of the stream's retention.
	NewSubscriberReceivesOldMessages: true,
	// The shape of this run, not a limit of Boxcar: an instance is a group,
	// so a "multiplied" subscriber of N instances would be N groups, each
	// receiving every message (the first run covers instances sharing a
	// group). With it the concurrency and order tests read from one
	// instance.
	RequireSingleInstance: true,
}

// TestPubSub runs Watermill's universal Pub/Sub suite on one bus, every
// instance of the PubSubConstructor in one consumer group.
func TestPubSub(t *testing.T) {
	bus := openBus(t)
	pubSub, groupPubSub := constructors(bus, func() string { return "suite" })
	tests.TestPubSub(t, sharedGroupFeatures, pubSub, groupPubSub)
}

// TestPubSubNewGroupPerInstance runs the suite with a consumer group of its
// own for every instance of the PubSubConstructor.
func TestPubSubNewGroupPerInstance(t *testing.T) {
	bus := openBus(t)
	pubSub, groupPubSub := constructors(bus, func() string { return "g-" + watermill.NewShortUUID() })
	tests.TestPubSub(t, newGroupFeatures, pubSub, groupPubSub)
}

// TestPubSubStressTest runs the first suite STRESS_TEST_COUNT times (10 by
// default) at once, on one bus. It takes minutes: it runs only when
// BOXCARWM_STRESS=1, without -short, e.g.
//
//	BOXCARWM_STRESS=1 go test -race -run TestPubSubStressTest -timeout 60m .
func TestPubSubStressTest(t *testing.T) {
	if testing.Short() || getenv("BOXCARWM_STRESS") != "1" {
		t.Skip("the stress run: set BOXCARWM_STRESS=1 and leave out -short")
	}
	bus := openBus(t)
	pubSub, groupPubSub := constructors(bus, func() string { return "suite" })
	tests.TestPubSubStressTest(t, sharedGroupFeatures, pubSub, groupPubSub)
}

func getenv(k string) string { return os.Getenv(k) }

// TestPubSubCloseTests runs the two tests of the suite that it skips for
// Pub/Subs claiming exactly-once delivery ("not supported yet"): no message
// lost while subscribers of a group close and new ones continue, and while
// subscribers close concurrently. They read with deduplication, so they run
// here with ExactlyOnceDelivery left out of their context: what they check
// (nothing lost across closes) is implied by exactly-once, and it exercises
// the adapter's close paths under load.
func TestPubSubCloseTests(t *testing.T) {
	bus := openBus(t)
	pubSub, _ := constructors(bus, func() string { return "suite" })
	features := sharedGroupFeatures
	features.ExactlyOnceDelivery = false
	for name, test := range map[string]func(*testing.T, tests.TestContext, tests.PubSubConstructor){
		"TestContinueAfterSubscribeClose": tests.TestContinueAfterSubscribeClose,
		"TestConcurrentClose":             tests.TestConcurrentClose,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, tests.TestContext{TestID: tests.NewTestID(), Features: features}, pubSub)
		})
	}
}
