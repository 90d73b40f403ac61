package conformance

import (
	"bytes"
	_ "embed"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// adapterSchemaJSON is a copy of spec/adapter.schema.json; a test fails when
// the two differ.
//
//go:embed adapter.schema.json
var adapterSchemaJSON []byte

const schemaURL = "adapter.schema.json"

// schemas holds one compiled validator per response definition of the
// schema ("helloResponse", ...), and "request".
var schemas = sync.OnceValues(func() (map[string]*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(adapterSchemaJSON))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, err
	}
	out := map[string]*jsonschema.Schema{}
	for _, def := range []string{"request", "helloResponse", "serveResponse", "resultResponse",
		"sendResponse", "receiveResponse", "challengeResponse", "exitResponse"} {
		s, err := c.Compile(schemaURL + "#/$defs/" + def)
		if err != nil {
			return nil, fmt.Errorf("compile %s: %w", def, err)
		}
		out[def] = s
	}
	return out, nil
})

// validate checks one JSON line against the definition def of the adapter
// schema.
func validate(def string, line []byte) error {
	all, err := schemas()
	if err != nil {
		return fmt.Errorf("conformance: adapter schema: %w", err)
	}
	s, ok := all[def]
	if !ok {
		return fmt.Errorf("conformance: no schema definition %q", def)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(line))
	if err != nil {
		return fmt.Errorf("not JSON: %w", err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("does not match the adapter schema (%s): %w", def, err)
	}
	return nil
}
