// Package dashboard is a web dashboard for taskqueue queues in Redis: an [http.Handler] that an application mounts
// under any path prefix, and that the taskqueue CLI serves with "taskqueue web".
//
// # Pages
//
// An overview of the queues (counts per state, the age of the oldest pending task, pickups per second, paused),
// a queue's tasks by state with paging, one task (its envelope pretty-printed, attempts, last error, result,
// progress, a timeline; cancel and delete), dead letters with their reasons and bulk requeue or delete by filter
// after a confirmation that states the count, search by id prefix and by envelope substring (a bounded HSCAN in
// steps, with progress), schedules (pause, resume, trigger), unique locks, group and workflow runs (a workflow as
// a tree), pause and resume, throughput and latency history as charts drawn on the server (inline SVG), and flow
// control: the limits of flow keys and the queue with the slots each key holds, set and cleared from the page.
//
// The pages are HTML rendered on the server ([html/template]: every value from Redis is escaped) with a little
// JavaScript and CSS embedded in the module (no CDN); each page works without JavaScript, which only adds
// conveniences (search steps run on their own with a progress bar, confirmation prompts, select all).
//
// # Security
//
// Authentication is the embedding application's: wrap the handler in its middleware (see the example with HTTP
// basic auth). The dashboard itself:
//   - registers no mutating route at all with [Config.ReadOnly];
//   - accepts mutations only as POST with a CSRF token (an HMAC of a random cookie, with a key of
//     [Config.CSRFKey] or a random one per process), behind [http.CrossOriginProtection];
//   - sends a Content-Security-Policy that allows only its own script and style files (no inline script);
//   - bounds every page size ([Config.MaxPageSize]) and runs no Redis command that blocks or walks a whole
//     keyspace in one call (searches and listings use SCAN and HSCAN in steps).
package dashboard
