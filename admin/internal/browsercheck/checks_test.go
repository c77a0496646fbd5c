package main

import (
	"strings"
	"testing"
)

// checkDOM passes a page as the handler renders it, and catches what an
// unescaped event would do: an element of its own, a changed title, the
// page's script not run, missing content.
func TestCheckDOMCatchesInjection(t *testing.T) {
	t.Parallel()
	p := pageCheck{name: "letter", title: "Dead letter 2", must: []string{textOf(hostileKey)}}
	good := `<html><head><title>Dead letter 2</title></head><body><span id="creds"><input></span>` +
		`<dd>` + textOf(hostileKey) + `</dd><script nonce="x">/* the page's */</script></body></html>`
	if bad := checkDOM(p, []byte(good)); len(bad) != 0 {
		t.Fatalf("a good page: %v", bad)
	}
	for name, dom := range map[string]string{
		"an injected script": strings.Replace(good, "</body>", hostileKey+"</body>", 1),
		"an injected image":  strings.Replace(good, "</body>", `<img src="x"></body>`, 1),
		"a changed title":    strings.Replace(good, "Dead letter 2", "pwned", 1),
		"the script not run": strings.Replace(good, `<span id="creds">`, `<span id="creds" hidden="">`, 1),
		"the key missing":    strings.Replace(good, textOf(hostileKey), "", 1),
	} {
		if bad := checkDOM(p, []byte(dom)); len(bad) == 0 {
			t.Errorf("%s: no problem found", name)
		}
	}
}
