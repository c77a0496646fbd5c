package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// connFlags say where the app is: its admin handler (online) or its files
// (offline).
type connFlags struct {
	url, token, operator string
	timeout              time.Duration

	db, dir, stream, subjectPrefix, storeKey, storeCipher string
}

// connFromEnv reads the defaults from the environment.
func connFromEnv(getenv func(string) string) connFlags {
	c := connFlags{
		url:         getenv("BOXCAR_URL"),
		token:       getenv("BOXCAR_TOKEN"),
		operator:    getenv("BOXCAR_OPERATOR"),
		db:          getenv("BOXCAR_DB"),
		dir:         getenv("BOXCAR_DIR"),
		storeKey:    getenv("BOXCAR_STORE_KEY"),
		storeCipher: getenv("BOXCAR_STORE_CIPHER"),
		timeout:     30 * time.Second,
	}
	if c.operator == "" {
		c.operator = getenv("USER")
	}
	return c
}

// define adds the connection flags to fs, with the current values as
// defaults (so that flags given before the command survive).
func (c *connFlags) define(fs *flag.FlagSet) {
	fs.StringVar(&c.url, "url", c.url, "the running app's admin handler (BOXCAR_URL)")
	fs.Var(secretFlag{&c.token}, "token", "the admin handler's bearer token (BOXCAR_TOKEN)")
	fs.StringVar(&c.operator, "operator", c.operator, "who acts, recorded with writes (BOXCAR_OPERATOR, default $USER)")
	fs.DurationVar(&c.timeout, "timeout", c.timeout, "timeout of each request to the admin handler")
	fs.StringVar(&c.db, "db", c.db, "the app's SQLite database, when the app is down (BOXCAR_DB)")
	fs.StringVar(&c.dir, "dir", c.dir, "the app's Config.Dir, when the app is down (BOXCAR_DIR)")
	fs.StringVar(&c.stream, "stream", c.stream, "the app's Config.Stream (offline; default BOXCAR)")
	fs.StringVar(&c.subjectPrefix, "subject-prefix", c.subjectPrefix, "the app's Config.SubjectPrefix (offline; default boxcar)")
	fs.Var(secretFlag{&c.storeKey}, "store-key", "the app's Config.StoreKey (offline; BOXCAR_STORE_KEY)")
	fs.StringVar(&c.storeCipher, "store-cipher", c.storeCipher, "the app's Config.StoreCipher (offline; BOXCAR_STORE_CIPHER)")
}

// secretFlag is a string flag whose value never shows in the usage.
type secretFlag struct{ p *string }

func (s secretFlag) String() string { return "" }

func (s secretFlag) Set(v string) error {
	*s.p = v
	return nil
}

// mode is where a command reads and writes.
type mode int

const (
	online mode = iota + 1
	offline
)

// errUsage marks errors of the command line.
var errUsage = errors.New("usage")

// errOffline is the answer to a write with the app down.
var errOffline = errors.New("the app is down: writes go through the running app's admin handler (--url)")

// mode decides between the admin handler and the files: flags given on
// the command line beat the environment.
func (c *cli) mode() (mode, error) {
	onFlag := c.explicit["url"]
	offFlag := c.explicit["db"] || c.explicit["dir"]
	switch {
	case onFlag && offFlag:
		return 0, fmt.Errorf("%w: give --url (the running app) or --db and --dir (its files, when it is down), not both", errUsage)
	case onFlag:
		return online, nil
	case offFlag:
		return offline, c.checkOffline()
	}
	on, off := c.conn.url != "", c.conn.db != "" || c.conn.dir != ""
	switch {
	case on && off:
		return 0, fmt.Errorf("%w: the environment sets both BOXCAR_URL and BOXCAR_DB/BOXCAR_DIR: give --url or --db and --dir", errUsage)
	case on:
		return online, nil
	case off:
		return offline, c.checkOffline()
	}
	return 0, fmt.Errorf("%w: where is the app? give --url URL (its admin handler, while it runs) or --db FILE --dir DIR (its files, when it is down); or BOXCAR_URL, BOXCAR_DB and BOXCAR_DIR", errUsage)
}

func (c *cli) checkOffline() error {
	if c.conn.db == "" || c.conn.dir == "" {
		return fmt.Errorf("%w: offline, give both --db (the app's database) and --dir (its Config.Dir)", errUsage)
	}
	return nil
}

// tokenInClear warns when a token would cross the network unencrypted.
func (c *cli) tokenInClear(u *url.URL) {
	if c.conn.token == "" || u.Scheme != "http" {
		return
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
		return
	}
	fmt.Fprintf(c.stderr, "boxcar: warning: the token goes in clear to %s (http, not https)\n", host)
}

// httpClient is the client of the admin handler.
func (c *cli) httpClient() *http.Client {
	return &http.Client{
		Timeout:   c.conn.timeout,
		Transport: http.DefaultTransport.(*http.Transport).Clone(),
		// A redirect would resend the token elsewhere: report it instead.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			return fmt.Errorf("the admin handler redirected to %s: give that URL as --url", req.URL.Redacted())
		},
	}
}
