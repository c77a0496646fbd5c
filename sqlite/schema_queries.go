package sqlite

import (
	"context"
	"database/sql"
	"errors"
)

// The schema registry's tables (migration 0005; package schema uses them).
const (
	SchemasTable        = "boxcar_schemas"
	SchemaModesTable    = "boxcar_schema_modes"
	SchemaExamplesTable = "boxcar_schema_examples"
)

// SchemaRow is one registered schema version.
type SchemaRow struct {
	Type        string
	Version     int
	Format      string
	Schema      []byte // canonical JSON
	Fingerprint string // hex SHA-256 of Schema
	CreatedNS   int64
}

const selectSchemaVersions = `SELECT type, version, format, schema, fingerprint, created_ns
FROM boxcar_schemas WHERE type = ? ORDER BY version`

const insertSchema = `INSERT INTO boxcar_schemas(type, version, format, schema, fingerprint, created_ns)
VALUES(?, ?, ?, ?, ?, ?)`

const selectSchemaTypes = `SELECT DISTINCT type FROM boxcar_schemas ORDER BY type`

const selectSchemaMode = `SELECT mode FROM boxcar_schema_modes WHERE type = ?`

const upsertSchemaMode = `INSERT INTO boxcar_schema_modes(type, mode, updated_ns) VALUES(?, ?, ?)
ON CONFLICT(type) DO UPDATE SET mode = excluded.mode, updated_ns = excluded.updated_ns`

const insertSchemaExample = `INSERT INTO boxcar_schema_examples(type, version, fingerprint, example, created_ns)
VALUES(?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`

const selectSchemaExamples = `SELECT example FROM boxcar_schema_examples
WHERE type = ? AND version = ? ORDER BY created_ns, fingerprint`

// SchemaVersions returns every registered version of typ, oldest first.
func SchemaVersions(ctx context.Context, q Querier, typ string) ([]SchemaRow, error) {
	rows, err := q.QueryContext(ctx, selectSchemaVersions, typ)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []SchemaRow
	for rows.Next() {
		var r SchemaRow
		if err := rows.Scan(&r.Type, &r.Version, &r.Format, &r.Schema, &r.Fingerprint, &r.CreatedNS); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// InsertSchema adds a version. Run it in the immediate transaction that
// read SchemaVersions and chose r.Version.
func InsertSchema(ctx context.Context, e Execer, r SchemaRow) error {
	_, err := e.ExecContext(ctx, insertSchema, r.Type, r.Version, r.Format, string(r.Schema), r.Fingerprint, r.CreatedNS)
	return err
}

// SchemaTypes returns the types that have at least one version, sorted.
func SchemaTypes(ctx context.Context, q Querier) ([]string, error) {
	rows, err := q.QueryContext(ctx, selectSchemaTypes)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// SchemaMode returns the mode set for typ, and false if none is.
func SchemaMode(ctx context.Context, q Querier, typ string) (string, bool, error) {
	var m string
	err := q.QueryRowContext(ctx, selectSchemaMode, typ).Scan(&m)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	return m, err == nil, err
}

// SetSchemaMode sets the mode of typ.
func SetSchemaMode(ctx context.Context, e Execer, typ, mode string, nowNS int64) error {
	_, err := e.ExecContext(ctx, upsertSchemaMode, typ, mode, nowNS)
	return err
}

// InsertSchemaExample adds an example of a version; false means it was
// there already (same fingerprint).
func InsertSchemaExample(ctx context.Context, e Execer, typ string, version int, fingerprint string, example []byte, nowNS int64) (bool, error) {
	res, err := e.ExecContext(ctx, insertSchemaExample, typ, version, fingerprint, string(example), nowNS)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// SchemaExamples returns the examples of a version, in the order added.
func SchemaExamples(ctx context.Context, q Querier, typ string, version int) ([][]byte, error) {
	rows, err := q.QueryContext(ctx, selectSchemaExamples, typ, version)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var ex []byte
		if err := rows.Scan(&ex); err != nil {
			return nil, err
		}
		out = append(out, ex)
	}
	return out, rows.Err()
}
