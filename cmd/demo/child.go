package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The demo re-executes itself to get processes it can really kill. A child
// finds its job in the environment variable envChild (a JSON childSpec), so
// the same code runs under `go run`, a built binary and `go test` (whose
// TestMain dispatches the same way).
//
// The protocol is lines of text. The child writes to stdout:
//
//	PROGRESS name=n name=n ...   counters, every 100ms
//	POINT name n                 it reached pause point name for the n-th time and waits
//	STATS name=n ...             numbers for the final table, once before exit
//	READY                        (broker) it accepts clients
//
// and reads "GO" lines on stdin to go on from a point. At a point the parent
// either answers GO or kills the child with SIGKILL: the pause only decides
// where the kill lands, the crash itself is real. When stdin closes (the
// parent is gone) the child exits.
const envChild = "BOXCAR_DEMO_CHILD"

// Child roles.
const (
	roleBroker = "broker" // a plain nats-server with JetStream on loopback
	roleNaive  = "naive"  // the signup story, written the naive way
	roleBoxcar = "boxcar" // the signup story on Boxcar
)

// Phases of an app child.
const (
	phaseRun     = "run"     // produce the scenario's workload and handle it
	phaseRecover = "recover" // restarted after a crash: handle what is left, then exit
)

// childSpec is a child's job.
type childSpec struct {
	Role     string
	Scenario string // scenario name (app roles)
	Phase    string
	Dir      string // the side's work directory: app.db, mail.log, nats/
	Users    int
	Writers  int
	// PauseAt maps a point name to the count at which the child pauses there.
	PauseAt map[string]int
	// BrokerURL is the nats:// URL of the broker child, for the naive side
	// (always) and the Boxcar side of the reorder scenario.
	BrokerURL string
	// Port and StoreDir are the broker's; Port is also where the
	// operations act's app serves its admin handler, with write token Token.
	Port     int
	StoreDir string
	Token    string
}

func childMain() int {
	var spec childSpec
	if err := json.Unmarshal([]byte(os.Getenv(envChild)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "demo child: bad spec:", err)
		return 2
	}
	var err error
	switch {
	case spec.Scenario == scenarioOps.name:
		err = runOpsApp(spec, newControl(spec))
	case spec.Role == roleBroker:
		err = runBroker(spec)
	case spec.Role == roleNaive:
		err = runNaiveApp(spec, newControl(spec))
	case spec.Role == roleBoxcar:
		err = runBoxcarApp(spec, newControl(spec))
	default:
		err = fmt.Errorf("unknown role %q", spec.Role)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo child %s/%s: %v\n", spec.Role, spec.Phase, err)
		return 1
	}
	return 0
}

// control is the child's side of the protocol.
type control struct {
	pauseAt map[string]int
	goCh    chan struct{}

	outMu sync.Mutex
	out   *bufio.Writer

	cmu      sync.Mutex
	counters map[string]*atomic.Int64
	stop     chan struct{}
	stopped  chan struct{}
}

func newControl(spec childSpec) *control {
	c := &control{
		pauseAt:  spec.PauseAt,
		goCh:     make(chan struct{}),
		out:      bufio.NewWriter(os.Stdout),
		counters: map[string]*atomic.Int64{},
		stop:     make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "GO" {
				c.goCh <- struct{}{}
			}
		}
		// The parent closed our stdin or died: nobody is watching.
		os.Exit(3)
	}()
	go c.reportLoop()
	return c
}

func (c *control) send(format string, a ...any) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	fmt.Fprintf(c.out, format+"\n", a...)
	c.out.Flush()
}

// count adds one to counter name and returns the new value.
func (c *control) count(name string) int {
	return int(c.counter(name).Add(1))
}

func (c *control) counter(name string) *atomic.Int64 {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	v := c.counters[name]
	if v == nil {
		v = new(atomic.Int64)
		c.counters[name] = v
	}
	return v
}

// point pauses at point name if this is its n-th pass and the parent asked
// for a pause there: it tells the parent and waits for GO (or for SIGKILL).
// Later passes wait for good: the parent is about to kill the process, and
// a dead process would not have gone on either.
func (c *control) point(name string, n int) {
	k, ok := c.pauseAt[name]
	if !ok || n < k {
		return
	}
	if n > k {
		select {}
	}
	c.report()
	c.send("POINT %s %d", name, n)
	<-c.goCh
}

// report writes the counters as one PROGRESS line.
func (c *control) report() {
	c.cmu.Lock()
	names := make([]string, 0, len(c.counters))
	for name := range c.counters {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("PROGRESS")
	for _, name := range names {
		fmt.Fprintf(&b, " %s=%d", name, c.counters[name].Load())
	}
	c.cmu.Unlock()
	c.send("%s", b.String())
}

func (c *control) reportLoop() {
	defer close(c.stopped)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			c.report()
			return
		case <-t.C:
			c.report()
		}
	}
}

// finish stops the progress reports and sends the final numbers.
func (c *control) finish(stats map[string]int64) {
	close(c.stop)
	<-c.stopped
	names := make([]string, 0, len(stats))
	for name := range stats {
		names = append(names, name)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("STATS")
	for _, name := range names {
		fmt.Fprintf(&b, " %s=%d", name, stats[name])
	}
	c.send("%s", b.String())
}
