// Package admin is Boxcar's operations handler: the JSON API of
// docs/ADMIN_API.md under /api/, and a server-rendered status page at /,
// for one *boxcar.Bus. The app mounts it where it wants; it never listens by
// itself:
//
//	h, err := admin.NewHandler(bus, admin.Options{Token: os.Getenv("BOXCAR_ADMIN_TOKEN"), Logger: logger})
//	if err != nil { ... }
//	mux.Handle("/boxcar/", http.StripPrefix("/boxcar", h))
//
// Reads need no credential unless Options.ReadToken is set; writes need
// Options.Token (without it the handler is read-only). The page's links and
// redirects are relative, so it works under any prefix http.StripPrefix
// removes.
//
// Security, in short: tokens are compared in constant time; the page's write
// forms carry the write token in a password field (no cookie, no session, so
// no cross-site request can act); every write is logged to Options.Logger
// before its response; request bodies are bounded (MaxBodyBytes) and strict
// (unknown fields are refused); every response carries a
// Content-Security-Policy that runs no script but the page's own.
// The remote address logged and recorded is the connection's
// (http.Request.RemoteAddr): behind a proxy, that is the proxy's.
package admin
