package report

import _ "embed"

// Schema is the JSON Schema (draft 2020-12) of the JSON report, described
// field by field in cmd/restart-sim/REPORT.md.
//
//go:embed schema.json
var Schema []byte
