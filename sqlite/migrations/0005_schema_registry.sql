-- The schema registry (package schema): the versions of each event type's
-- schema. Version numbers run 1, 2, 3 ... per type without gaps; a version
-- is inserted by one immediate transaction that read the latest one, so two
-- registrations of a type cannot both take the same number (the primary
-- key would refuse the second anyway). schema is the canonical JSON (keys
-- sorted, no whitespace) and fingerprint its hex SHA-256: one schema is
-- registered once per type, whatever its key order or whitespace.
CREATE TABLE boxcar_schemas (
    type        TEXT    NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0),
    format      TEXT    NOT NULL,
    schema      TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    created_ns  INTEGER NOT NULL,
    PRIMARY KEY (type, version)
) WITHOUT ROWID;

CREATE UNIQUE INDEX boxcar_schemas_fingerprint ON boxcar_schemas(type, fingerprint);

-- A registered version is what stored events were validated against and
-- what consumers decode them with: it is never changed nor deleted. The
-- triggers abort the statement (not the transaction) that tries.
CREATE TRIGGER boxcar_schemas_never_updated BEFORE UPDATE ON boxcar_schemas
BEGIN
    SELECT RAISE(ABORT, 'boxcar_schemas: a registered schema version is never changed; register a new version');
END;

CREATE TRIGGER boxcar_schemas_never_deleted BEFORE DELETE ON boxcar_schemas
BEGIN
    SELECT RAISE(ABORT, 'boxcar_schemas: a registered schema version is never deleted');
END;

-- The compatibility mode of a type, when set; absent means the default
-- (BACKWARD_TRANSITIVE).
CREATE TABLE boxcar_schema_modes (
    type       TEXT PRIMARY KEY,
    mode       TEXT    NOT NULL,
    updated_ns INTEGER NOT NULL
) WITHOUT ROWID;

-- Example payloads of a version, each valid under it, for consumers'
-- contract tests. fingerprint is the hex SHA-256 of the canonical example,
-- so adding an example twice keeps one row.
CREATE TABLE boxcar_schema_examples (
    type        TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    fingerprint TEXT    NOT NULL,
    example     TEXT    NOT NULL,
    created_ns  INTEGER NOT NULL,
    PRIMARY KEY (type, version, fingerprint),
    FOREIGN KEY (type, version) REFERENCES boxcar_schemas(type, version)
) WITHOUT ROWID;
