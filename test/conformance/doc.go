// Package conformance keeps docs/conformance.md honest. Its only test, TestConformanceDoc, reads
// the list of normative MQTT 3.1.1 statements (docs/spec/mqtt-3.1.1.tsv) and the conformance
// document, and fails when a statement that binds a server is missing from the document or listed
// twice, when a row's summary differs from the list, when a status is not one of the three allowed
// forms, when the counts the document states differ from its rows, or when a test the document
// names does not exist or does not carry the statement's ID in its name. It reports every problem at once and logs how many statements are covered, not yet
// covered, and not applicable.
//
// The package has no code of its own; everything is in its _test.go file.
package conformance
