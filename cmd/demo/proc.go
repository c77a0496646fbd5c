package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// proc is the parent's handle on a child process (see child.go for the
// protocol).
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser

	events chan string // POINT, READY lines, in order
	exited chan struct{}
	err    error // set before exited is closed

	mu     sync.Mutex
	stderr strings.Builder
	stats  map[string]int64
}

// startProc starts the demo executable as a child doing spec. onProgress
// gets the counters of each PROGRESS line.
func startProc(exe, name string, spec childSpec, onProgress func(map[string]int64)) (*proc, error) {
	raw, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), envChild+"="+string(raw))
	p := &proc{name: name, cmd: cmd, events: make(chan string, 16), exited: make(chan struct{}), stats: map[string]int64{}}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			kind, rest, _ := strings.Cut(line, " ")
			switch kind {
			case "PROGRESS":
				if onProgress != nil {
					onProgress(parseCounters(rest))
				}
			case "STATS":
				p.mu.Lock()
				p.stats = parseCounters(rest)
				p.mu.Unlock()
			case "POINT", "READY":
				p.events <- line
			}
		}
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%s: %w%s", name, err, p.stderrTail())
		}
		p.err = err
		close(p.exited)
	}()
	return p, nil
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}

func (p *proc) stderrTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := strings.TrimSpace(p.stderr.String())
	if s == "" {
		return ""
	}
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return "\n" + s
}

func parseCounters(s string) map[string]int64 {
	m := map[string]int64{}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			m[k] = n
		}
	}
	return m
}

// await waits for the child's next event line, which must start with want
// ("POINT auth-committed", "READY").
func (p *proc) await(ctx context.Context, want string) error {
	select {
	case line := <-p.events:
		if !strings.HasPrefix(line, want) {
			return fmt.Errorf("%s: expected %q, got %q", p.name, want, line)
		}
		return nil
	case <-p.exited:
		err := p.err
		if err == nil {
			err = errors.New("exited")
		}
		return fmt.Errorf("%s ended before %q: %w", p.name, want, err)
	case <-ctx.Done():
		p.kill()
		return fmt.Errorf("%s: waiting for %q: %w", p.name, want, ctx.Err())
	}
}

// resume lets a child paused at a point go on.
func (p *proc) resume() error {
	_, err := io.WriteString(p.stdin, "GO\n")
	return err
}

// kill sends SIGKILL (os.Process.Kill) and waits until the process is gone.
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// wait waits for the child to exit by itself, successfully.
func (p *proc) wait(ctx context.Context) error {
	select {
	case <-p.exited:
		return p.err
	case <-ctx.Done():
		p.kill()
		return fmt.Errorf("%s did not finish: %w%s", p.name, ctx.Err(), p.stderrTail())
	}
}

// stop closes the child's stdin, which a broker takes as "shut down", and
// waits for it, killing it after grace.
func (p *proc) stop(grace time.Duration) {
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.kill()
	}
}

// finalStats returns the STATS line the child sent before exiting.
func (p *proc) finalStats() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}
