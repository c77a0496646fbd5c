package main

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/boxcar-bus/boxcar"
	"github.com/boxcar-bus/boxcar/admin"
)

// startAdmin serves bus's admin handler (package admin, the real one),
// mounted under /admin/ as an app would, and returns its URL and its write
// token. The online tests reach the bus only through it.
func startAdmin(t *testing.T, bus *boxcar.Bus) (url, token string) {
	t.Helper()
	token = boxcar.NewSecret()
	h, err := admin.NewHandler(bus, admin.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/admin/", http.StripPrefix("/admin", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL + "/admin", token
}
