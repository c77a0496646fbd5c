package admin

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/boxcar-bus/boxcar"
)

// The error codes of docs/ADMIN_API.md.
const (
	codeInvalid      = "invalid"
	codeUnauthorized = "unauthorized"
	codeForbidden    = "forbidden"
	codeNotFound     = "not_found"
	codeReadOnly     = "read_only"
	codeClosed       = "closed"
	codeInternal     = "internal"
)

// apiError is an error with its HTTP status and code.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// invalidf is a bad request: a malformed body, parameter or filter.
func invalidf(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, code: codeInvalid, msg: fmt.Sprintf(format, args...)}
}

// notFoundf is an unknown subscriber, letter, replay or route.
func notFoundf(format string, args ...any) error {
	return &apiError{status: http.StatusNotFound, code: codeNotFound, msg: fmt.Sprintf(format, args...)}
}

// errorOf maps err to its status and code: the library's sentinels as
// docs/ADMIN_API.md says, anything else as internal.
func errorOf(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	e := &apiError{status: http.StatusInternalServerError, code: codeInternal, msg: err.Error()}
	switch {
	case errors.Is(err, boxcar.ErrInvalidConfig), errors.Is(err, boxcar.ErrInvalidEvent):
		e.status, e.code = http.StatusBadRequest, codeInvalid
	case errors.Is(err, boxcar.ErrNotFound):
		e.status, e.code = http.StatusNotFound, codeNotFound
	case errors.Is(err, boxcar.ErrReadOnly):
		e.status, e.code = http.StatusConflict, codeReadOnly
	case errors.Is(err, boxcar.ErrClosed):
		e.status, e.code = http.StatusServiceUnavailable, codeClosed
	}
	return e
}
