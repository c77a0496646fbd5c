// Package schema is Boxcar's schema registry: the JSON Schemas of event
// types, versioned and stored in the application's SQLite database, with a
// compatibility checker that decides which new versions may follow the old
// ones, a validator for payloads, a directory convention for keeping
// schemas in the repository, and CI checks (CheckDir, package schematest).
//
// # Schemas and versions
//
// Parse refuses what cannot be checked safely (see Parse) and keeps a
// schema's canonical JSON (keys sorted, no whitespace) and its SHA-256
// fingerprint, so a change of key order or whitespace is the same schema.
// Registry.Register adds a schema as the next version of an event type if
// it is compatible with the previous versions under the type's Mode
// (default BACKWARD_TRANSITIVE, because replay and dead-letter redrive hand
// consumers events of every age). Registering a schema that is already a
// version of the type, the latest or an older one, returns that version and
// writes nothing: the older version was accepted when it was registered,
// and a producer rolled back to older code goes on publishing as that
// version instead of adding a copy of it, which could fail the checks
// against the versions in between. Versions are never changed or deleted.
//
// A version that an older Boxcar registered and Parse refuses now (a $ref
// that leads back to where it is applied without going into a property or
// an item, a number beyond the limits of Validate) still loads, so that the
// app starts after an upgrade, and validates payloads as it always did.
// The checker cannot reason about it: a new version checked against it is
// refused (rule "unsupported", naming the stored version and how to get
// past it: mode None for that registration, then a mode that is not
// transitive), and "boxcar schema ls" and "show" warn of it. Registering
// such a schema is refused, as a first version or a later one, except the
// stored version itself: Register and RegisterDir pass over it as over any
// version registered already, so the schema directory it came from still
// registers at start. LoadDir and "boxcar schema check" refuse its file.
//
// # At start, at publish, at the consumer
//
// An app registers its schemas at start, before it opens the bus, and
// hands the Registry to the bus as boxcar.Config.Schemas:
//
//	reg, _ := schema.NewRegistry(ctx, db)      // loads every registered version
//	_, err := reg.RegisterDir(ctx, "schemas")  // schemas/TYPE/N.json; a no-op when nothing changed
//	bus, _ := boxcar.Open(ctx, db, boxcar.Config{Dir: "data", Schemas: reg})
//
// PublishTx then validates every event of a type that has a schema
// (ValidateEvent) against the latest version or the one the event names
// (Event.SchemaVersion), refuses an invalid one with an error naming the
// type, the version and the failing JSON path before anything is written,
// and stamps the version on the event (Message.SchemaVersion). Validation
// reads compiled schemas from memory: it never queries the database
// (Registry says how another process's registrations become visible).
//
// A consumer names the version it reads with a typed handler,
// TxHandler[T](reg, typ, version, fn) or HandlerFunc[T]: T is that
// version's shape, and every event reaches fn in it. Upcasters
// (Registry.Upcast), one per breaking step, lift older payloads step by
// step (Lift); a compatible step needs none. A payload that cannot be
// lifted or decoded is a *DecodeError matching boxcar.ErrSchema, and the
// bus dead-letters the event at once with reason "schema".
//
// A breaking step (renaming a field) is refused by the default mode: make
// it deliberately, by registering it under mode None with an upcaster from
// the version before. Transitive modes check later versions against the
// versions before the break too, which the upcaster hides from consumers
// but not from the checker: after a break, a type's later versions are
// registered under Backward (or None) rather than BackwardTransitive.
//
// In CI, Command (and RunCheck, RunList, RunShow, RunDiff) is "boxcar
// schema check|ls|show|diff"; package schematest holds the contract-test
// helpers.
//
// # The compatibility checker
//
// Everything rests on one question, answered by CheckReader: can a reader
// with schema R accept every instance valid under writer schema W? The modes
// are made of it as Confluent defines them: BACKWARD asks it with the new
// version as R and the previous one as W (a consumer on the new version
// reads old data: upgrade consumers first), FORWARD the other way round
// (consumers on the previous version read new data: upgrade producers
// first), FULL both; the _TRANSITIVE modes ask it against every previous
// version, NONE not at all. Each breaking change names its path, a rule and
// the versions, e.g. "property `email` removed: consumers on v1 require it".
//
// For JSON Schema, compatibility is inclusion of the sets of valid
// instances, and inclusion is transitive: versions each proven BACKWARD
// against the one before are BACKWARD against all of them. The transitive
// modes make the difference where a step was taken under another mode (a
// type that was NONE or FORWARD for a while, then BACKWARD): the default
// is transitive so that no such history leaves an old event that consumers
// of the new version cannot read.
//
// The checker is sound and not complete: it never calls a pair compatible
// that it has not proven so, and where it cannot prove a pair it says so
// (rule "unsupported", "cannot prove compatibility of `oneOf` at
// /properties/x") rather than guess.
//
// # The supported subset
//
// Keywords the checker compares:
//   - type, with arrays of types. A reader of number reads integers; a
//     reader of integer does not read a writer's numbers.
//   - properties, required, additionalProperties (absent, true, false or a
//     schema), minProperties, maxProperties; nested objects.
//   - items in its schema form, minItems, maxItems, uniqueItems.
//   - enum and const. When the writer allows few values (an enum, a const,
//     null or boolean types) each is validated against the reader's
//     subschema, which is exact whatever keywords the reader uses; a reader
//     enum must hold every writer value.
//   - minimum, maximum, exclusiveMinimum, exclusiveMaximum (also draft 4's
//     boolean form), multipleOf, minLength, maxLength: the reader's bounds
//     must be no tighter than the writer's.
//   - pattern: a reader's pattern must be the writer's, else the change is
//     reported as unsupported (regular expressions are not compared).
//   - format: Boxcar's validator asserts the formats it knows (email, uuid,
//     date-time, uri, ...), in every draft, so that a schema's format is
//     enforced at publish. The checker follows: a reader's known format
//     must be the writer's too (rule format-changed, also when the writer
//     had none), and formats the validator does not know are annotations.
//   - $ref to "#", "#/$defs/..." or "#/definitions/..." within the
//     document, recursive ones included: a pair of subschemas already being
//     compared is taken as compatible (the coinductive reading that
//     recursive types need), and each pair is compared once.
//   - title, description, examples, $comment, default, deprecated, readOnly,
//     writeOnly, content* and unknown keywords are annotations: ignored.
//
// Identical subschemas (same canonical form, and references in them that
// lead to identical subschemas) are compatible whatever they contain.
//
// The applicators, as far as they can be proven without guessing (none of
// them when unevaluatedProperties or unevaluatedItems read their results):
//   - a reader is the conjunction of its allOf branches, its anyOf, oneOf,
//     not and if/then/else, and its other keywords: the writer must satisfy
//     each part, checked apart (exact);
//   - a reader anyOf is read if one branch reads the writer. Branches that
//     allow none of the writer's types are set aside first, so the common
//     nullable form {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/x"}]} is
//     checked exactly, branch against type;
//   - a writer that is only an anyOf: the reader must read each branch
//     (exact); only a oneOf: reading each branch suffices; only an allOf:
//     reading one branch suffices;
//   - a 2019-09+ $ref with sibling keywords is the conjunction of its target
//     and the siblings, as allOf.
//
// Outside the subset — a reader's oneOf, not, if/then/else and an anyOf
// that no single branch proves, patternProperties, propertyNames,
// dependentSchemas, dependentRequired, dependencies, prefixItems, items as
// an array, additionalItems, contains, unevaluatedItems,
// unevaluatedProperties, $dynamicRef, $recursiveRef — the rule is:
//   - in the reader, where it constrains the instances the writer allows
//     (patternProperties only matters for objects), the change is
//     "unsupported";
//   - in the writer, the keyword is dropped: that only widens what the
//     writer allows, so if the reader reads the wider writer it reads the
//     real one. If it does not, the failure may be one the keyword rules
//     out, and "unsupported" is reported for the keyword instead. (Not for
//     a patternProperties beside additionalProperties, or prefixItems
//     beside items: dropping those would narrow the writer.)
//
// A pair needing more than 50,000 subschema comparisons is reported as
// unsupported instead of being checked further.
//
// # The open content model
//
// A JSON Schema object without additionalProperties:false is open: it
// accepts properties it does not declare, with any value. Data written
// under an open model may therefore already hold any property name with any
// value — and in Boxcar it may, because payloads are validated at publish
// against exactly that schema, so whatever it let through is in the stream
// and will be replayed. The checker does not assume producers "never really
// sent" undeclared properties (the lenient policy some registries offer):
// it follows from the one question above, and every case below is that
// question applied to old and new version of an object with a property p
// ("constrained" means p's schema is not {}):
//
//	old model  change                          BACKWARD (new reads old)                      FORWARD (old reads new)
//	open       add optional p, constrained     ✗ property-added-to-open-content-model         ✓
//	open       add optional p, {}              ✓                                              ✓
//	open       add required p                  ✗ required-property-added (and the above)      ✓
//	open       remove optional p, constrained  ✓                                              ✗ property-removed-from-open-content-model
//	open       remove optional p, {}           ✓                                              ✓
//	open       remove required p               ✓                                              ✗ required-property-removed (and the above)
//	closed     add optional p                  ✓                                              ✗ property-added-to-closed-content-model
//	closed     add required p                  ✗ required-property-added                      ✗ property-added-to-closed-content-model
//	closed     remove optional p               ✗ property-removed-from-closed-content-model   ✓
//	closed     remove required p               ✗ property-removed-from-closed-content-model   ✗ required-property-removed
//	open → closed, nothing else                ✗ additional-properties-narrowed               ✓
//	closed → open, nothing else                ✓                                              ✗ additional-properties-widened
//
// Why: adding p to an open model constrains a name old data may hold with
// any value (old v1 data {"p": 42} against a new "p": {"type": "string"}).
// Removing p from a closed model makes the new reader reject the p old data
// holds. Adding p to a closed model makes the old reader reject it; removing
// p from an open model lets new data hold p with any value, which an old
// reader that constrains p rejects. Hence, for JSON Schema, FULL allows
// only unconstrained properties to come and go in an open model, and no
// property at all in a closed one: Avro's "add or remove an optional field
// with a default" relies on readers that skip unknown fields and fill in
// defaults, which validation does not do.
//
// What to do: for a type that will gain optional properties (the common
// BACKWARD case), close its model with additionalProperties:false from the
// first version; an open model can only gain unconstrained properties (or
// constrained ones under mode NONE, when you know no stored event holds
// them). The messages say so.
//
// # Rules
//
// type-changed; minimum-changed, maximum-changed, multiple-of-changed;
// min-length-changed, max-length-changed, format-changed; min-items-changed,
// max-items-changed, unique-items-changed; min-properties-changed,
// max-properties-changed; enum-added, enum-removed, const-added,
// const-removed (a reader enum or const where the writer allowed any
// value), enum-value-removed, enum-value-added, const-changed,
// value-rejected (a writer value the reader rejects for another reason);
// required-property-added, property-made-required,
// required-property-removed, property-made-optional; the four
// *-content-model rules and additional-properties-narrowed/-widened above;
// schema-false (the reader forbids what the writer allows);
// schema-format-changed (JSON Schema against another language);
// unsupported; more-changes (the count of changes past the first 100).
//
// # Formats other than JSON Schema
//
// The registry stores each version's Format. A protobuf or Avro checker is
// a new implementation of the package's dialect interface (parse, validate,
// compare a reader with a writer) and a Format constant; Check, the modes,
// the registry and the directory work on it unchanged.
package schema
