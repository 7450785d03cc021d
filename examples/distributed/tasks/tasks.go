// Package tasks is all that the producer and the worker of the distributed example share, besides Redis: the
// module and names of the functions that tasks reference, and their argument types. The worker registers its
// implementations under these names; the producer only names them, so it never imports the worker's code.
package tasks

import "github.com/graflow-go/taskqueue"

// Module is the module the worker registers its functions under.
const Module = "examples.media"

// Function names within [Module].
const (
	ResizeImage = "resize_image"
	SendEmail   = "send_email"
)

// ResizeArgs are the arguments of [ResizeImage].
type ResizeArgs struct {
	Image string `json:"image"`
	Width int    `json:"width"`
}

// EmailArgs are the arguments of [SendEmail].
type EmailArgs struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

// Resize returns a reference to [ResizeImage] for a producer to enqueue: the types keep module, name and
// arguments in step with what the worker registered.
func Resize(args ResizeArgs) *taskqueue.Reference { return taskqueue.Ref(Module, ResizeImage, args) }

// Email returns a reference to [SendEmail] for a producer to enqueue.
func Email(args EmailArgs) *taskqueue.Reference { return taskqueue.Ref(Module, SendEmail, args) }
