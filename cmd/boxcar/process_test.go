package main

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds the command once (go build) into a directory removed at
// the end of the run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "boxcar-cli-test")
		if err != nil {
			buildErr = err
			return
		}
		buildDir = dir
		binPath = filepath.Join(dir, "boxcar")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = errors.New(string(out) + err.Error())
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v", buildErr)
	}
	return binPath
}

// buildDir holds the binary; TestMain's cleanup removes it.
var buildDir string

// exe runs the binary with args and a clean environment, and returns what
// it printed and its exit status.
func exe(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "USER=probe"}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run %v: %v", args, err)
	}
	return result{stdout: out.String(), stderr: errOut.String(), code: cmd.ProcessState.ExitCode()}
}

// health as a real process is a probe: 0 while the app is healthy, 1 once
// a subscriber is stopped (down and behind), 3 when the app cannot be
// reached.
func TestHealthProbeAsAProcess(t *testing.T) {
	f := newFixture(t, boxcar.Config{Health: boxcar.HealthOptions{Interval: 50 * time.Millisecond, Window: 200 * time.Millisecond}})
	f.subscribe("billing", boxcar.TxHandler(func(ctx context.Context, tx *sql.Tx, m boxcar.Message) error {
		return record(ctx, tx, "billing", m)
	}), boxcar.SubscribeOptions{})
	for range 3 {
		f.publish(boxcar.Event{Type: "order.placed", Key: "k", Data: []byte("{}")})
	}
	f.waitCaughtUp()
	url, token := startAdmin(t, f.bus)
	waitHealth(t, f.bus, "the bus ok", func(h boxcar.Health) bool { return h.State == boxcar.HealthOK })

	r := exe(t, "health", "--url", url)
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "ok\n") {
		t.Fatalf("health of a healthy app: %s", r)
	}

	f.closeSub("billing")
	for range 2 {
		f.publish(boxcar.Event{Type: "order.placed", Key: "k", Data: []byte("{}")})
	}
	waitHealth(t, f.bus, "billing stopped", func(h boxcar.Health) bool {
		ch, _ := componentState(h, "subscriber", "billing")
		return ch.State == boxcar.HealthStopped
	})
	r = exe(t, "health", "--url", url)
	if r.code != exitUnhealthy || !strings.HasPrefix(r.stdout, "stopped\n") || !strings.Contains(r.stdout, "not running anywhere, 2 events behind") {
		t.Fatalf("health with billing stopped: %s", r)
	}
	r = exe(t, "health", "--url", url, "-o", "json")
	var h boxcar.Health
	if err := json.Unmarshal([]byte(r.stdout), &h); err != nil || r.code != exitUnhealthy || h.State != boxcar.HealthStopped {
		t.Fatalf("health -o json: %s (%v)", r, err)
	}
	if r := exe(t, "health", "--url", closedURL(t)); r.code != exitUnreachable || !strings.Contains(r.stderr, "unreachable") {
		t.Fatalf("health of no app: %s", r)
	}
	if r := exe(t, "health", "--bogus"); r.code != exitUsage || !strings.Contains(r.stderr, "usage: boxcar health") {
		t.Fatalf("health with a bad flag: %s", r)
	}

	testInterruptAsAProcess(t, f, url, token)
}

func waitHealth(t *testing.T, bus *boxcar.Bus, what string, cond func(boxcar.Health) bool) {
	t.Helper()
	waitFor(t, what, func() (bool, string) {
		h, err := bus.Health(context.Background())
		b, _ := json.Marshal(h)
		return err == nil && cond(h), string(b)
	})
}

// Ctrl-C while the replay's bar shows stops the process, exit 130, saying
// the replay goes on; it does (billing is down: the replay waits for it).
func testInterruptAsAProcess(t *testing.T, f *fixture, url, token string) {
	cmd := exec.Command(binary(t), "replay", "billing", "--from-stream-seq", "1", "--url", url)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "USER=probe", "BOXCAR_TOKEN=" + token}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	sawBar := make(chan struct{})
	read := make(chan struct{})
	go func() { // ends when the process closes its stderr
		defer close(read)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.HasPrefix(sc.Text(), "replay billing [") {
				select {
				case <-sawBar:
				default:
					close(sawBar)
				}
			}
		}
	}()
	select {
	case <-sawBar:
	case <-read:
		cmd.Wait()
		t.Fatalf("the process ended before its progress bar: %q", lines)
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-read
	cmd.Wait()
	all := strings.Join(lines, "\n")
	if code := cmd.ProcessState.ExitCode(); code != exitInterrupted || !strings.Contains(all, "stopped watching: the replay of billing goes on in the app") {
		t.Fatalf("exit %d after Ctrl-C:\n%s", code, all)
	}
	st, err := f.bus.ReplayProgress(context.Background(), "billing")
	if err != nil || st.Done || st.Through != 5 {
		t.Fatalf("the replay after Ctrl-C: %+v %v", st, err)
	}
}
