package taskqueue

import "encoding/json"

// SerializedTask is the seed's serialization envelope: everything a resolver needs to rehydrate a task. Strategy
// names how Payload is to be read ("reference" for the built-in [ReferenceResolver]); Payload is a JSON object.
type SerializedTask struct {
	Strategy string          `json:"strategy"`
	Payload  json.RawMessage `json:"payload"`
}
