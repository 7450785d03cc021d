package taskqueue

import (
	"fmt"
	"reflect"
	"sort"
	"sync"
)

// DefaultResolverID is the resolver id used when a task spec or a queue names none (the seed's "default").
const DefaultResolverID = "default"

// ResolverRegistry maps resolver ids to [TaskResolver]s. It is a value that producers and workers build and
// inject into queues and workers: there is no package-level registry, which answers the seed's first open
// question (registration is injected, not global). It is safe for concurrent use. The zero value is an empty
// registry, ready to use; a nil registry resolves nothing.
type ResolverRegistry struct {
	mu        sync.RWMutex
	resolvers map[string]TaskResolver
}

// NewResolverRegistry returns an empty registry.
func NewResolverRegistry() *ResolverRegistry {
	return &ResolverRegistry{resolvers: make(map[string]TaskResolver)}
}

// Register adds a resolver under id: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.
// A second registration of the same id returns [ErrDuplicateResolver].
func (r *ResolverRegistry) Register(id string, res TaskResolver) error {
	if !resolverIDPattern.MatchString(id) {
		return fmt.Errorf("%w: resolver id %s must match %s", ErrInvalidConfig, quote(id), resolverIDPattern)
	}
	if r == nil || isNilResolver(res) {
		return fmt.Errorf("%w: nil registry or resolver for %q", ErrInvalidConfig, id)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.resolvers[id]; dup {
		return fmt.Errorf("%w: %q", ErrDuplicateResolver, id)
	}
	if r.resolvers == nil {
		r.resolvers = make(map[string]TaskResolver)
	}
	r.resolvers[id] = res
	return nil
}

// MustRegister is [ResolverRegistry.Register] for static set-up: it panics on error.
func (r *ResolverRegistry) MustRegister(id string, res TaskResolver) {
	if err := r.Register(id, res); err != nil {
		panic(err)
	}
}

// Lookup returns the resolver registered under id, or a [*ResolveError] wrapping [ErrUnknownResolver].
func (r *ResolverRegistry) Lookup(id string) (TaskResolver, error) {
	var res TaskResolver
	if r != nil {
		r.mu.RLock()
		res = r.resolvers[id] // only valid ids get in
		r.mu.RUnlock()
	}
	switch {
	case res != nil:
		return res, nil
	case !resolverIDPattern.MatchString(id):
		return nil, &ResolveError{Kind: ErrUnknownResolver, Detail: quote(id) + " is not a valid resolver id"}
	}
	return nil, &ResolveError{Kind: ErrUnknownResolver, Detail: quote(id) + " is not registered"}
}

// isNilResolver catches a typed nil, such as a nil *ReferenceResolver, as well as a nil interface.
func isNilResolver(res TaskResolver) bool {
	if res == nil {
		return true
	}
	v := reflect.ValueOf(res)
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// IDs returns the registered resolver ids, sorted.
func (r *ResolverRegistry) IDs() []string {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	ids := make([]string, 0, len(r.resolvers))
	for id := range r.resolvers {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Resolve rehydrates a serialized task through the resolver registered under resolverID. Unsafe strategies are
// refused before any resolver sees them.
func (r *ResolverRegistry) Resolve(resolverID string, st SerializedTask) (Executable, error) {
	if IsUnsafeStrategy(st.Strategy) {
		return nil, &ResolveError{Kind: ErrUnsafeStrategy, Detail: quote(st.Strategy)}
	}
	res, err := r.Lookup(resolverID)
	if err != nil {
		return nil, err
	}
	return res.Resolve(st)
}
