package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"unicode"
	"unicode/utf8"
)

// OperatorHeader names the person acting on an API write; the library
// records "<name> via admin API from <remote addr>" as its by.
const OperatorHeader = "X-Boxcar-Operator"

// maxOperatorLen bounds an operator's name, in bytes.
const maxOperatorLen = 64

// Log keys of the audit log.
const (
	logOperator = "operator"
	logRemote   = "remote_addr"
	logRoute    = "route"
	logPath     = "path"
	logResult   = "result"
	logStatus   = "status"
	logError    = "err"
	logDetail   = "detail"
)

// access is what a credential allows.
type access int

const (
	accessNone access = iota
	accessRead
	accessWrite
)

// sameSecret compares in constant time (hashing first, so that the length
// of the secret does not show either).
func sameSecret(given, secret string) bool {
	if secret == "" {
		return false
	}
	a, b := sha256.Sum256([]byte(given)), sha256.Sum256([]byte(secret))
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// accessOf says what the credential given allows.
func (h *handler) accessOf(given string) access {
	switch {
	case sameSecret(given, h.opts.Token):
		return accessWrite
	case sameSecret(given, h.opts.ReadToken):
		return accessRead
	}
	return accessNone
}

// bearer returns the token of an "Authorization: Bearer" header, or "".
func bearer(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// checkRead refuses a read without the credential ReadToken asks for.
// basic also accepts the token as an HTTP Basic password (for browsers).
func (h *handler) checkRead(r *http.Request, basic bool) error {
	if h.opts.ReadToken == "" {
		return nil
	}
	given := bearer(r)
	if _, pw, ok := r.BasicAuth(); basic && ok && given == "" {
		given = pw
	}
	if given == "" {
		return &apiError{status: http.StatusUnauthorized, code: codeUnauthorized, msg: "reads need a credential: Authorization: Bearer <token>"}
	}
	if h.accessOf(given) == accessNone {
		return &apiError{status: http.StatusForbidden, code: codeForbidden, msg: "the credential is not this handler's read or write token"}
	}
	return nil
}

// checkWrite refuses a write without the write token (given is the
// credential the request carries, "" if none).
func (h *handler) checkWrite(given string) error {
	switch {
	case h.opts.Token == "":
		return &apiError{status: http.StatusForbidden, code: codeForbidden, msg: "this handler is read-only: it was mounted without Options.Token"}
	case given == "":
		return &apiError{status: http.StatusUnauthorized, code: codeUnauthorized, msg: "writes need the write token: Authorization: Bearer <token>"}
	case h.accessOf(given) != accessWrite:
		return &apiError{status: http.StatusForbidden, code: codeForbidden, msg: "the credential is not this handler's write token"}
	}
	return nil
}

// operatorOf checks the name an operator gave ("" is anonymous).
func operatorOf(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "anonymous", nil
	case len(name) > maxOperatorLen:
		return "", invalidf("operator name is %d bytes: use at most %d", len(name), maxOperatorLen)
	case !utf8.ValidString(name):
		return "", invalidf("operator name is not valid UTF-8")
	}
	for _, c := range name {
		if unicode.IsControl(c) {
			return "", invalidf("operator name has a control character %q", c)
		}
	}
	return name, nil
}

// by is what the library records as who acted.
func by(operator, via string, r *http.Request) string {
	return fmt.Sprintf("%s via admin %s from %s", operator, via, r.RemoteAddr)
}

// audit logs a write and its result (status, if it succeeded), before its
// response is written. operator is the raw name given when it was refused.
func (h *handler) audit(r *http.Request, operator string, status int, err error, detail string) {
	result := "ok"
	if operator == "" {
		operator = "anonymous"
	}
	if err != nil {
		ae := errorOf(err)
		result, status = ae.code, ae.status
	}
	attrs := []slog.Attr{
		slog.String(logOperator, operator), slog.String(logRemote, r.RemoteAddr),
		slog.String(logRoute, r.Pattern), slog.String(logPath, r.URL.Path),
		slog.String(logResult, result), slog.Int(logStatus, status),
	}
	if detail != "" {
		attrs = append(attrs, slog.String(logDetail, detail))
	}
	if err != nil {
		attrs = append(attrs, slog.String(logError, err.Error()))
	}
	h.log.LogAttrs(r.Context(), slog.LevelInfo, "boxcar admin: write", attrs...)
}
