package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"time"
)

// progress shows what the demo is doing on stderr: on a terminal one live
// line, redrawn with the children's counters; otherwise one line per step.
type progress struct {
	mu     sync.Mutex
	w      io.Writer
	live   bool
	start  time.Time
	total  int // scenarios in this run
	label  string
	counts string
	last   time.Time
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w, start: time.Now()}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.live = true
		}
	}
	return p
}

// step starts a new step of a scenario's side.
func (p *progress) step(sc *scenario, side, what string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.label = fmt.Sprintf("[%d/%d %s] %-6s %s", sc.num, p.total, sc.name, side, what)
	p.counts = ""
	if p.live {
		p.draw()
		return
	}
	fmt.Fprintf(p.w, "%5.1fs %s\n", time.Since(p.start).Seconds(), p.label)
}

// counters takes a child's PROGRESS counters.
func (p *progress) counters(m map[string]int64) {
	if p == nil || !p.live {
		return
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		fmt.Fprintf(&b, " %s=%d", k, m[k])
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.counts = b.String()
	if time.Since(p.last) >= 50*time.Millisecond {
		p.draw()
	}
}

// maxLive keeps the live line on one row of an ordinary terminal: a wrapped
// line could not be redrawn in place.
const maxLive = 110

func (p *progress) draw() {
	p.last = time.Now()
	line := fmt.Sprintf("%5.1fs %s", time.Since(p.start).Seconds(), p.label)
	if p.counts != "" {
		line += " ·" + p.counts
	}
	if r := []rune(line); len(r) > maxLive {
		line = string(r[:maxLive-1]) + "…"
	}
	fmt.Fprint(p.w, "\r\033[K"+line)
}

// note prints a line that stays (a finished scenario).
func (p *progress) note(format string, a ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.live {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "%5.1fs "+format+"\n", append([]any{time.Since(p.start).Seconds()}, a...)...)
}

// clear removes the live line.
func (p *progress) clear() {
	if p == nil || !p.live {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprint(p.w, "\r\033[K")
}
