package schema

import (
	"fmt"

	"github.com/boxcar-bus/boxcar"
)

// The Registry is what Boxcar validates payloads with at PublishTx.
var _ boxcar.SchemaValidator = (*Registry)(nil)

// ValidateEvent makes the Registry a boxcar.SchemaValidator: set it as
// boxcar.Config.Schemas and PublishTx validates every event's Data against
// its type's schema before anything is written.
//
// version is the event's Event.SchemaVersion: 0 validates against the
// latest version this Registry knows, a number against that version (a
// producer that may be rolled back, or that is deployed after its
// consumers, names the version its code writes). It returns the version
// the payload matched, which the event carries to its consumers
// (Message.SchemaVersion). A type without any registered schema is
// published as it is (0, nil), unless the event names a version.
//
// The error is a *ValidationError naming the type, the version and the
// failing JSON path (or a payload that is not JSON); ErrUnknownVersion or
// ErrUnknownType when the event names a version this Registry does not
// know. It reads memory only, never the database (see Registry on how
// other processes' registrations become visible), and costs one parse of
// the payload and one run of the compiled schema.
func (r *Registry) ValidateEvent(typ string, version int, data []byte) (int, error) {
	versions := r.known(typ)
	switch {
	case version < 0:
		return 0, fmt.Errorf("%w: %s v%d: versions are 1, 2, 3 ... (0: the latest)", ErrUnknownVersion, typ, version)
	case len(versions) == 0 && version == 0:
		return 0, nil
	case len(versions) == 0:
		return 0, fmt.Errorf("%w: %s v%d: the event names a schema version but %s has no schema registered in this process (register it at start, or Registry.Refresh)", ErrUnknownType, typ, version, typ)
	case version > len(versions):
		return 0, fmt.Errorf("%w: %s v%d: this process knows versions 1 to %d (registered elsewhere? Registry.Refresh loads it)", ErrUnknownVersion, typ, version, len(versions))
	case version == 0:
		version = len(versions)
	}
	s := versions[version-1]
	if err := s.Validate(data); err != nil {
		return 0, err
	}
	return version, nil
}

// known returns the versions of typ in memory, oldest first, without
// touching the database.
func (r *Registry) known(typ string) []*Schema {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.types[typ]
}
