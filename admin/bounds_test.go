package admin_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/admin"
)

// What a client that asks for letters and does not read them can hold. A
// page of /api/deadletters ends at boxcar.MaxPageBytes (twelve letters of
// 900 KiB asked for with limit=1000 come as pages that go on with next),
// and only four requests read letters at once: four clients that stop
// reading mid-answer hold the API's letter routes, and a fifth waits its
// turn, while the health probe, the status, the other reads and the status
// pages are answered.
// When one of the four goes away, the fifth is answered. Before, one
// request held every letter it asked for, and any number of requests ran
// at once: a thousand letters of a megabyte is a gigabyte a request.
func TestLetterReadsAreBoundedInBytesAndInTurns(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	const n = 12
	for i := range n {
		b.publish(fmt.Sprintf("bad-%02d", i), strings.Repeat(string(rune('a'+i)), 900<<10))
	}
	b.waitLetters(n)

	var seen []uint64
	for after := uint64(0); ; {
		var page struct {
			Items []boxcar.DeadLetter `json:"items"`
			Next  uint64              `json:"next"`
		}
		want(t, "a page of dead letters", b.get(fmt.Sprintf("/api/deadletters?limit=1000&after=%d", after), &page), 200, "")
		if after == 0 && len(page.Items) >= n {
			t.Fatalf("the first page holds %d letters of 900 KiB: not bounded in bytes", len(page.Items))
		}
		for _, dl := range page.Items {
			seen = append(seen, dl.Seq)
		}
		if page.Next == 0 {
			break
		}
		after = page.Next
	}
	if len(seen) != n {
		t.Fatalf("paging listed %d letters (%v); want %d", len(seen), seen, n)
	}

	// Four clients that read the status line and stop: each handler is
	// mid-answer, in its turn (a page is ~12 MB of JSON; a client that
	// offers a 4 KiB window and a 4 MiB send buffer cannot take it).
	addr := strings.TrimPrefix(b.srv.URL, "http://")
	var stalled []net.Conn
	for range 4 {
		c := stallingGet(t, addr, "/api/deadletters?limit=1000")
		stalled = append(stalled, c)
		t.Cleanup(func() { c.Close() })
	}

	fifth := func(timeout time.Duration) (int, error) {
		ctx, cancel := context.WithTimeout(b.ctx, timeout)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.srv.URL+"/api/deadletters?limit=1", nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := b.srv.Client().Do(req)
		if err != nil {
			return 0, err
		}
		defer res.Body.Close()
		var page struct {
			Items []boxcar.DeadLetter `json:"items"`
		}
		if err := json.NewDecoder(res.Body).Decode(&page); err != nil {
			return res.StatusCode, err
		}
		if len(page.Items) != 1 {
			return res.StatusCode, fmt.Errorf("%d letters, want 1", len(page.Items))
		}
		return res.StatusCode, nil
	}
	if status, err := fifth(time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a fifth letter read while four are held: %d, %v; want it to wait its turn (the client's deadline)", status, err)
	}
	// The status pages have turns of their own (a reviewer held them all
	// with four such clients, for as long as they stayed).
	for _, path := range []string{"/api/health", "/api/status", "/api/subscribers", "/api/outbox", "/", "/deadletters", "/outbox", "/subscribers/billing", fmt.Sprintf("/deadletters/%d", seen[0])} {
		if r := b.get(path, nil); r.status != 200 && r.status != 503 {
			t.Fatalf("GET %s while the letter reads are held: %s; want an answer", path, r)
		}
	}
	// The four turns were held all along: the answers above took none.
	if status, err := fifth(time.Second); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a letter read after the other reads: %d, %v; want it still to wait its turn", status, err)
	}
	stalled[0].Close()
	if status, err := fifth(time.Minute); err != nil || status != 200 {
		t.Fatalf("a letter read once one of the four went away: %d, %v; want 200 and one letter", status, err)
	}
}

// stallingGet sends GET path on a connection that offers a 4 KiB receive
// window, reads the answer's status line (200) and returns the connection
// unread beyond it.
func stallingGet(t *testing.T, addr, path string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, addr); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReaderSize(c, 16).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("GET %s: status line %q, %v; want 200", path, line, err)
	}
	return c
}

// A server's own WriteTimeout, shorter than a turn's deadline, still
// bounds the turn: four clients that stop reading lose their turns at the
// server's 10 s, not at the turn's minute. Before, the turn's deadline
// replaced the server's (a reviewer's find): the fifth read waited a
// minute. (At 2 s, a page's build under -race in CI outlived the server's
// timeout before its status line.)
func TestLetterTurnsKeepTheServersWriteTimeout(t *testing.T) {
	t.Parallel()
	b := setup(t, admin.Options{Token: writeToken})
	b.subscribeBilling(boxcar.SubscribeOptions{})
	for i := range 12 {
		b.publish(fmt.Sprintf("bad-%02d", i), strings.Repeat("x", 900<<10))
	}
	b.waitLetters(12)
	h, err := admin.NewHandler(b.bus, admin.Options{Token: writeToken})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.WriteTimeout = 10 * time.Second
	srv.Start()
	t.Cleanup(srv.Close)
	addr := strings.TrimPrefix(srv.URL, "http://")
	for range 4 {
		c := stallingGet(t, addr, "/api/deadletters?limit=1000")
		t.Cleanup(func() { c.Close() })
	}
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/deadletters?limit=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("a fifth letter read, four clients stalled on a server with a 10 s WriteTimeout: %v after %v; want it answered once their writes time out", err, time.Since(start))
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("the fifth letter read: %s", res.Status)
	}
}
